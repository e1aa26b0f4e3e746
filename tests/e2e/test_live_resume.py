"""The live streams resume after a reconnect with `Last-Event-ID`, with no gap and no
duplicate: a player's readings (`/v1/players/{id}/readings`, ids are log offsets), the
sessions view (`/v1/sessions/stream`) and a pipeline's results (`/v1/pipelines/{name}/stream`).
Alerts fire and resolve, and reach `/v1/events` as `alert` events."""
import json
import threading
import time

import requests

import reference
from conftest import TOPIC

BASE = 1_700_000_040_000
SQL = ('SELECT "playerId", window_start, window_end, count(*) AS n, max(heartbeat) AS max_hr '
       'FROM TUMBLE("heartbeat-raw-topic", "createdAt", INTERVAL \'10\' SECOND) GROUP BY "playerId", window_start, window_end')


def post(s, records):
    r = requests.post(f"{s.url}/v1/topics/{TOPIC}/records", json=records, timeout=30)
    assert r.status_code == 200, r.text


def sse(url, last_event_id=None, until=lambda evs: False, quiet_s=2.0, params=None):
    """Reads Server-Sent Events until `until(events)` holds or nothing comes for `quiet_s`.
    Returns [(id, event, data)]."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events, cur = [], {}
    with requests.get(url, headers=headers, params=params, stream=True, timeout=(5, quiet_s)) as r:
        assert r.status_code == 200, r.text
        try:
            for line in r.iter_lines(decode_unicode=True):
                if line == "":
                    if "data" in cur:
                        events.append((cur.get("id"), cur.get("event", "message"), json.loads(cur["data"])))
                        if until(events):
                            break
                    cur = {}
                elif not line.startswith(":"):
                    k, _, v = line.partition(":")
                    cur[k] = v[1:] if v.startswith(" ") else v
        except requests.exceptions.ConnectionError:
            pass  # quiet for quiet_s: the read timed out
    return events


class Reader(threading.Thread):
    """Follows an SSE stream in the background, collecting [(id, event, data)]."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.url, self.events, self.response = url, [], None
        self.start()

    def run(self):
        try:
            self.response = requests.get(self.url, stream=True, timeout=(5, 60))
            cur = {}
            for line in self.response.iter_lines(decode_unicode=True):
                if line == "":
                    if "data" in cur:
                        self.events.append((cur.get("id"), cur.get("event", "message"), json.loads(cur["data"])))
                    cur = {}
                elif not line.startswith(":"):
                    k, _, v = line.partition(":")
                    cur[k] = v[1:] if v.startswith(" ") else v
        except Exception:  # closed by close()
            pass

    def wait(self, pred, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred(list(self.events)):
                return list(self.events)
            time.sleep(0.05)
        raise AssertionError(f"{self.url}: condition not met; got {self.events[-5:]}")

    def close(self):
        if self.response is not None:
            self.response.close()


def test_a_players_readings_resume_from_their_offset(sluice):
    bpm = [100, 130, 160] * 10  # low, moderate, high for HRmax 190 (ACSM %HRmax)
    post(sluice, [reference.event("line", BASE + i * 1000, b) for i, b in enumerate(bpm)] + [reference.event("other", BASE, 120)])
    url = f"{sluice.url}/v1/players/line/readings"
    got = sse(url, params={"since_ms": 0}, quiet_s=10, until=lambda evs: sum(len(d["readings"]) for _, _, d in evs) >= 30)
    readings = [r for _, _, d in got for r in d["readings"]]
    assert [r[1] for r in readings] == bpm, "only this player's readings, in order"
    assert [r[2] for r in readings[:3]] == ["low", "moderate", "high"]
    assert readings[0][0] == BASE and got[0][2]["hr_max_bpm"] == 190
    last_id = got[-1][0]
    # More readings while nobody listens; a resume from the last id gets exactly those.
    post(sluice, [reference.event("line", BASE + (30 + i) * 1000, 140) for i in range(5)])
    more = sse(url, last_event_id=last_id, quiet_s=10, until=lambda evs: sum(len(d["readings"]) for _, _, d in evs) >= 5)
    assert [r[0] for _, _, d in more for r in d["readings"]] == [BASE + (30 + i) * 1000 for i in range(5)]
    # Without since_ms, a new stream starts 5 minutes back in log time: the same 35.
    fresh = sse(url, quiet_s=10, until=lambda evs: sum(len(d["readings"]) for _, _, d in evs) >= 35)
    assert sum(len(d["readings"]) for _, _, d in fresh) == 35


def test_sessions_and_pipeline_streams_resume_with_no_gap_and_no_duplicate(sluice):
    spec = {"name": "hr10", "sql": SQL, "max_out_of_orderness_ms": 0, "watermark": "per_key"}
    assert requests.post(f"{sluice.url}/v1/pipelines", json=spec, timeout=30).status_code == 201
    sessions_url, results_url = f"{sluice.url}/v1/sessions/stream", f"{sluice.url}/v1/pipelines/hr10/stream"
    sessions, results = Reader(sessions_url), Reader(results_url)
    time.sleep(0.5)  # both subscribed
    post(sluice, [reference.event("a", BASE + i * 1000, 120) for i in range(25)])
    first = sessions.wait(lambda evs: any(e == "session_update" and d["player_id"] == "a" and d["open"] and d["open"][0]["samples"] == 25 for _, e, d in evs))
    rows = results.wait(lambda evs: sum(len(d["rows"]) for _, e, d in evs if e == "result") >= 2)
    sessions.close()
    results.close()
    assert sorted(r["n"] for _, e, d in rows if e == "result" for r in d["rows"]) == [10, 10]
    seen_sessions, seen_results = first[-1][0], rows[-1][0]
    assert seen_sessions and seen_results, "events carry ids"
    # While both streams are disconnected: b starts a session, a's grows, results commit.
    post(sluice, [reference.event("b", BASE + i * 1000, 150) for i in range(12)] + [reference.event("a", BASE + (25 + i) * 1000, 120) for i in range(20)])
    deadline = time.time() + 30
    while time.time() < deadline:
        open_now = {s["player_id"]: s["samples"] for s in sluice.sessions()["open"]}
        if open_now == {"a": 45, "b": 12}:
            break
        time.sleep(0.1)
    assert open_now == {"a": 45, "b": 12}
    def latest(evs):
        out = {}
        for _, e, d in evs:
            if e == "session_update":
                out[d["player_id"]] = d["open"][0]["samples"] if d["open"] else 0
        return out
    resumed = sse(sessions_url, last_event_id=seen_sessions, until=lambda evs: latest(evs) == {"a": 45, "b": 12}, quiet_s=10)
    assert not [e for _, e, _ in resumed if e == "resync"], resumed
    assert latest(resumed) == {"a": 45, "b": 12}, "each changed player's latest sessions"
    ids = [int(i) for i, _, _ in resumed]
    assert ids == sorted(ids) and len(ids) == len(set(ids)) and ids[0] > int(seen_sessions)
    # The pipeline's results committed meanwhile: windows 20-30 s and 30-40 s of a, 0-10 s of b.
    requests.post(f"{sluice.url}/v1/pipelines/hr10/drain", timeout=60)
    later = sse(results_url, last_event_id=seen_results, until=lambda evs: sum(len(d["rows"]) for _, e, d in evs if e == "result") >= 5, quiet_s=10)
    got = sorted((r["playerId"], r["n"]) for _, e, d in later if e == "result" for r in d["rows"])
    assert got == [("a", 5), ("a", 10), ("a", 10), ("b", 2), ("b", 10)], got
    all_rows = sorted((r["playerId"], r["window_start"]) for _, e, d in rows + later if e == "result" for r in d["rows"])
    assert len(all_rows) == len(set(all_rows)), "no window twice"
    # An id from another life of the server (beyond any given) replays what is kept.
    again = sse(sessions_url, last_event_id=10**12, until=lambda evs: latest(evs) == {"a": 45, "b": 12}, quiet_s=5)
    assert latest(again) == {"a": 45, "b": 12}


def test_alerts_fire_resolve_and_reach_the_events_stream(sluice):
    start = sse(f"{sluice.url}/v1/events", params={"last_event_id": 0}, quiet_s=1.0)
    last = start[-1][0] if start else 0
    spec = {"name": "hot", "sql": SQL, "max_out_of_orderness_ms": 0, "watermark": "per_key",
            "alerts": [{"name": "too_high", "column": "max_hr", "above": 170.0}]}
    assert requests.post(f"{sluice.url}/v1/pipelines", json=spec, timeout=30).status_code == 201
    # 10 s windows: 0-10 s at 120 bpm, 10-20 s peaks at 180, 20-30 s at 120, 30-40 s closes 20-30.
    bpm = [120] * 10 + [120] * 5 + [180] + [120] * 4 + [120] * 10 + [120]
    post(sluice, [reference.event("z", BASE + i * 1000, b) for i, b in enumerate(bpm)])
    requests.post(f"{sluice.url}/v1/pipelines/hot/drain", timeout=60)
    alerts = sse(f"{sluice.url}/v1/events", params={"kind": "alert", "pipeline": "hot"}, last_event_id=last,
                 until=lambda evs: len([1 for _, e, _ in evs if e == "alert"]) >= 2, quiet_s=10)
    states = [(d["state"], d["value"]) for _, e, d in alerts if e == "alert"]
    assert states == [("firing", 180.0), ("resolved", 120.0)], states
    fired, resolved = [d for _, e, d in alerts if e == "alert"]
    assert resolved["fired_at_ms"] == fired["fired_at_ms"] and resolved["resolved_at_ms"] >= fired["fired_at_ms"]
    p = requests.get(f"{sluice.url}/v1/pipelines/hot", timeout=10).json()
    assert (p["alerts"], p["alerts_firing"]) == (1, 0), p
    metrics = requests.get(f"{sluice.url}/metrics", timeout=10).text
    assert 'sluice_pipeline_alerts_firing{pipeline="hot"} 0' in metrics


def test_a_merged_sessions_stream_sends_each_players_newest_state_once_per_interval(sluice):
    url = f"{sluice.url}/v1/sessions/stream"
    every, merged = Reader(url), Reader(url + "?merge_ms=1000")
    time.sleep(0.5)  # both subscribed
    players = [f"m{i}" for i in range(5)]
    for k in range(10):  # ten small posts 50 ms apart: ten rounds of early results
        post(sluice, [reference.event(p, BASE + k * 1000, 120) for p in players])
        time.sleep(0.05)

    def latest(evs):
        out = {}
        for _, e, d in evs:
            if e == "session_update" and d["player_id"] in players:
                out[d["player_id"]] = d["open"][0]["samples"] if d["open"] else 0
        return out

    done = lambda evs: latest(evs) == {p: 10 for p in players}
    got_merged, got_every = merged.wait(done), every.wait(done)
    merged.close()
    every.close()
    ids = [int(i) for i, _, _ in got_merged]
    assert ids == sorted(ids) and len(ids) == len(set(ids)), "id order, no duplicate"
    count = lambda evs, p: sum(1 for _, e, d in evs if e == "session_update" and d["player_id"] == p)
    for p in players:
        # The posts took about 0.6 s, so at most two 1 s flushes (three if one fell between).
        assert 1 <= count(got_merged, p) <= 3, (p, count(got_merged, p))
    assert sum(count(got_every, p) for p in players) > sum(count(got_merged, p) for p in players) >= len(players)
