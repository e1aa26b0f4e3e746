"""Pipelines under continuous input, killed with SIGKILL 30 times: their final tables equal
one uninterrupted run over the same input (the same log), with no row missing and none
doubled.

A producer sends readings of 20 players without pause, resending a batch until it is
acknowledged (at least once, so the log holds some records twice, as clients do), and
resending some batches on purpose. The server is SIGKILLed at random moments and
restarted. The reference run is a fresh server over a copy of the same topic."""
import random
import shutil
import threading
import time

import requests

from conftest import TOPIC, Sluice, lake_rows

BASE = 1_700_000_040_000
PLAYERS = [f"crash-{i:02d}" for i in range(20)]
ENV = {"SLUICE_STREAM__IDLE_TIMEOUT_MS": "0", "SLUICE_STREAM__CHECKPOINT_INTERVAL_MS": "100"}
KILLS = 30

PIPELINES = [
    {"name": "per10s", "watermark": "per_key", "max_out_of_orderness_ms": 0,
     "sql": 'SELECT "playerId", window_start, window_end, count(*) AS n, sum(heartbeat) AS total, min(heartbeat) AS lo, max(heartbeat) AS hi '
            'FROM TUMBLE("heartbeat-raw-topic", "createdAt", INTERVAL \'10\' SECOND) GROUP BY "playerId", window_start, window_end'},
    {"name": "hop_open", "max_out_of_orderness_ms": 3_600_000,
     "sql": 'SELECT "playerId", window_start, window_end, count(*) AS n, avg(heartbeat) AS avg_hr '
            'FROM HOP("heartbeat-raw-topic", "createdAt", INTERVAL \'30\' SECOND, INTERVAL \'1\' MINUTE) GROUP BY "playerId", window_start, window_end'},
]
TABLES = {"heart_rate": ["player_id", "session_start"], "heartbeat_raw": ["partition", "offset"],
          "per10s": ["playerId", "window_start"], "hop_open": ["playerId", "window_start"]}


def batch(second):
    return [{"playerId": p, "heartbeat": 60 + (second * 31 + i * 17) % 120, "createdAt": BASE + second * 1000} for i, p in enumerate(PLAYERS)]


class Producer(threading.Thread):
    """Sends one second of readings per request; retries a batch until it is acknowledged."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server, self.second, self.stop, self.acked = server, 0, threading.Event(), []

    def send(self, records):
        while not self.stop.is_set():
            try:
                r = requests.post(f"{self.server.url}/v1/topics/{TOPIC}/records", json=records, timeout=5)
                if r.status_code == 200:
                    self.acked.append(records)
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.02)
        return False

    def run(self):
        while not self.stop.is_set() and self.send(batch(self.second)):
            if self.second % 10 == 9:
                self.send(batch(self.second - 3))  # a resend on purpose
            self.second += 1
            time.sleep(0.005)


def tables(s):
    out = {}
    for name, key in TABLES.items():
        rows = lake_rows(s.data_dir, name)
        for r in rows:
            r.pop("date", None)
        out[name] = sorted(rows, key=lambda r: tuple(str(r[k]) for k in key) + (str(sorted(r.items())),))
    return out


def drain_all(s):
    for name in TABLES:
        r = requests.post(f"{s.url}/v1/pipelines/{name}/drain", timeout=120)
        assert r.status_code == 200, r.text


def test_thirty_sigkills_leave_the_same_tables_as_one_run(tmp_path):
    rng = random.Random(7)
    s = Sluice(tmp_path / "a" / "data", env=ENV, log_path=tmp_path / "a.log").start()
    for p in PIPELINES:
        assert requests.post(f"{s.url}/v1/pipelines", json=p, timeout=30).status_code == 201
    producer = Producer(s)
    producer.start()
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.2, 1.0))
        s.kill9()
        time.sleep(rng.uniform(0.0, 0.2))
        s.start(timeout=60)
    time.sleep(0.5)
    producer.stop.set()
    producer.join(timeout=30)
    assert producer.second > 50, "the producer made progress between kills"
    print(f"seconds sent: {producer.second}, batches acked: {len(producer.acked)}")
    drain_all(s)
    crashed = tables(s)
    assert s.stop() == 0

    # The reference: a fresh server over a copy of the same topic, never interrupted.
    ref_dir = tmp_path / "b" / "data"
    (ref_dir / "log" / "_topics").mkdir(parents=True)
    for part in (s.data_dir / "log").glob(f"{TOPIC}-*"):
        shutil.copytree(part, ref_dir / "log" / part.name)
    shutil.copy(s.data_dir / "log" / "_topics" / f"{TOPIC}.json", ref_dir / "log" / "_topics")
    shutil.copytree(s.data_dir / "pipelines", ref_dir / "pipelines")
    ref = Sluice(ref_dir, env=ENV, log_path=tmp_path / "b.log").start()
    try:
        drain_all(ref)
        reference = tables(ref)
    finally:
        ref.stop()

    print({name: len(rows) for name, rows in crashed.items()})
    for name in TABLES:
        assert len(crashed[name]) == len(reference[name]), f"{name}: {len(crashed[name])} rows after kills, {len(reference[name])} in one run"
        assert crashed[name] == reference[name], f"{name} differs"
    # Every acknowledged reading is in the raw table, stored once per time it was sent.
    raw = {(r["player_id"], int(r["created_at"].timestamp() * 1000)) for r in crashed["heartbeat_raw"]}
    assert all((rec["playerId"], rec["createdAt"]) in raw for b in producer.acked for rec in b)
    assert len({(r["partition"], r["offset"]) for r in crashed["heartbeat_raw"]}) == len(crashed["heartbeat_raw"])
    # Resends count once in the sessions: each player's samples are its distinct readings.
    for p in PLAYERS:
        distinct = len({t for (q, t) in raw if q == p})
        assert sum(r["samples"] for r in crashed["heart_rate"] if r["player_id"] == p) == distinct
