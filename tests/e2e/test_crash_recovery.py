"""Durability: kill -9 the server mid-replay, restart it, resend what was not acknowledged,
and find every acknowledged reading stored and every reading counted exactly once."""
import json
import os
import random
from collections import deque

import duckdb
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import reference
from conftest import DATA, TOPIC, Sluice, lake_table

PLAYERS = {
    "run": DATA / "20210119_run_garmin_fenix6.tcx",
    "ride": DATA / "20210308_virtual_ride_with_power.tcx",
    "yoga": DATA / "20210323_yoga.tcx",
}
FRAME = 25
WINDOW = 4
ENV = {"SLUICE_STREAM__IDLE_TIMEOUT_MS": "0", "SLUICE_STREAM__CHECKPOINT_INTERVAL_MS": "100"}


def readings():
    return {p: reference.read(path) for p, path in PLAYERS.items()}


def frames(per_player):
    """Frames of FRAME readings, players interleaved."""
    chunks = {p: [[reference.event(p, t, b) for t, b in r[i:i + FRAME]] for i in range(0, len(r), FRAME)] for p, r in per_player.items()}
    out = []
    while any(chunks.values()):
        for p in PLAYERS:
            if chunks[p]:
                out.append(chunks[p].pop(0))
    return out


def send_all(server, frs, kill_after_acks=(), on_kill=None):
    """At-least-once producer: resends every unacknowledged frame after a reconnect.
    Kills the server (SIGKILL) with frames in flight when the ack count reaches each
    value of kill_after_acks. Returns the number of kills."""
    acked, kills = 0, 0
    kill_points = deque(sorted(kill_after_acks))
    while acked < len(frs):
        try:
            with connect(f"ws://127.0.0.1:{server.port}/v1/topics/{TOPIC}/ws", open_timeout=10) as ws:
                inflight, nxt = deque(), acked
                while acked < len(frs):
                    while len(inflight) < WINDOW and nxt < len(frs):
                        ws.send("\n".join(json.dumps(e) for e in frs[nxt]))
                        inflight.append(nxt)
                        nxt += 1
                    if kill_points and acked >= kill_points[0]:
                        kill_points.popleft()
                        server.kill9()
                        kills += 1
                        if on_kill:
                            on_kill(kills)
                        server.start()
                        break
                    ack = json.loads(ws.recv(timeout=30))
                    idx = inflight.popleft()
                    assert "error" not in ack, ack
                    assert ack["accepted"] == len(frs[idx]), ack
                    acked = idx + 1
        except (ConnectionClosed, OSError, TimeoutError):
            continue
    return kills


def check_exactly_once(server, per_player):
    server.drain()
    # The raw table's pipeline is drained too: draining heart_rate commits a checkpoint,
    # but the raw pipeline may not have read the last records by then.
    r = requests.post(server.url + "/v1/pipelines/heartbeat_raw/drain", timeout=60)
    assert r.status_code == 200, r.text
    for player, r in per_player.items():
        want = reference.sessions(r)
        got = reference.api_sessions_as_ms(server.sessions(player)["closed"])
        assert got == want, f"{player}: sessions differ from the reference (lost or double-counted readings)"
        assert server.sessions(player)["open"] == []
    con = duckdb.connect()
    con.register("raw", lake_table(server.lake, "heartbeat_raw"))
    rows, distinct_pos = con.execute(
        "SELECT count(*), count(DISTINCT (\"partition\", \"offset\")) FROM raw").fetchone()
    assert rows == distinct_pos, "a log position was written to the raw table twice"
    stored = set(con.execute("SELECT player_id, epoch_ms(created_at) FROM raw").fetchall())
    for player, r in per_player.items():
        missing = [t for t, _ in r if (player, t) not in stored]
        assert not missing, f"{player}: {len(missing)} acknowledged readings are not in the raw table"
    log_total = sum(p["high_watermark"] for t in server_topics(server) if t["name"] == TOPIC for p in t["partitions"])
    assert rows == log_total, "the raw table holds exactly the log's records"
    return rows


def server_topics(server):
    return requests.get(server.url + "/v1/topics", timeout=10).json()["topics"]


def test_sigkill_mid_replay_loses_nothing_and_counts_nothing_twice(tmp_path):
    seed = int(os.environ.get("E2E_SEED", random.randrange(1 << 30)))
    print(f"E2E_SEED={seed}")
    rng = random.Random(seed)
    per_player = readings()
    frs = frames(per_player)
    server = Sluice(tmp_path / "data", env=ENV).start()
    try:
        kill_points = rng.sample(range(5, len(frs) - 5), 4)
        kills = send_all(server, frs, kill_points)
        assert kills == 4
        rows = check_exactly_once(server, per_player)
        assert rows >= sum(len(r) for r in per_player.values())
    finally:
        server.stop()


def test_graceful_restart_continues_where_it_stopped(tmp_path):
    per_player = readings()
    frs = frames(per_player)
    server = Sluice(tmp_path / "data", env=ENV).start()
    send_all(server, frs[: len(frs) // 2])
    assert server.stop() == 0, "SIGTERM exits 0 after a clean shutdown"
    server.start()
    send_all(server, frs[len(frs) // 2:])
    rows = check_exactly_once(server, per_player)
    assert rows == sum(len(r) for r in per_player.values()), "no resends, so no duplicates in the log"
    assert server.stop() == 0
