"""The Delta lake under SIGKILL: the server is killed 30 times while pipelines commit a
checkpoint every 100 ms and the maintenance policy compacts the tables every 100 ms. After
every restart the tables read without error, through their Delta logs only, and at the end
every acknowledged reading is in the raw table exactly once and the sessions equal the
reference. Once with the lake on the local disk, once on an S3-API server (moto)."""
import os
import random
import time

import pytest

import lakes
from conftest import Sluice, lake_table
from test_crash_recovery import check_exactly_once, frames, readings, send_all

KILLS = 30
ENV = {
    "SLUICE_STREAM__IDLE_TIMEOUT_MS": "0",
    "SLUICE_STREAM__CHECKPOINT_INTERVAL_MS": "100",
    "SLUICE_LAKE__MAINTENANCE_INTERVAL_MS": "100",
    "SLUICE_LAKE__COMPACT_MIN_FILES": "2",
}


def check_tables(server):
    """Each table opens at its latest version and every file it names exists."""
    for name in ("heartbeat_raw", "heart_rate"):
        t = server.lake.table(name)
        if t is None:
            continue
        for uri in t.file_uris():
            assert server.lake.exists(uri), f"{name} v{t.version()} names a missing file {uri}"
        t.to_pyarrow_table()


@pytest.mark.parametrize("store", ["local", "s3"])
def test_sigkill_during_commits_and_compaction(tmp_path, request, store):
    seed = int(os.environ.get("E2E_SEED", random.randrange(1 << 30)))
    print(f"E2E_SEED={seed}")
    rng = random.Random(seed)
    per_player = readings()
    frs = frames(per_player)
    lake = request.getfixturevalue("moto").new_lake() if store == "s3" else lakes.local(tmp_path / "data")
    server = Sluice(tmp_path / "data", env=ENV, lake=lake).start()
    # After each restart, a pause before the producer goes on: the restarted pipelines
    # commit what they re-read and the policy compacts, so kills land during both.
    started = server.start

    def start():
        r = started()
        time.sleep(rng.uniform(0.1, 0.6))
        return r
    server.start = start
    try:
        kill_points = rng.sample(range(2, len(frs) - 2), KILLS)
        kills = send_all(server, frs, kill_points, on_kill=lambda _: check_tables(server))
        assert kills == KILLS
        check_exactly_once(server, per_player)
        check_tables(server)
        history = server.lake.table("heartbeat_raw").history()
        assert any(h["operation"] == "OPTIMIZE" for h in history), "compaction ran between the kills"
        raw = lake_table(server.lake, "heartbeat_raw")
        assert raw.num_rows == len(set(zip(raw.column("partition").to_pylist(), raw.column("offset").to_pylist())))
    finally:
        server.stop()
