"""Retention in a running server: whole closed segments past retention.bytes are deleted and
the log start offset advances; reads from offset 0 start at the log start offset."""
import json
import time

import requests

from conftest import TOPIC, Sluice


def test_size_retention_advances_the_log_start_offset(tmp_path):
    cfg = tmp_path / "sluice.toml"
    cfg.write_text(
        "[log]\nsegment_bytes = 4096\nretention_check_interval_ms = 100\n"
        "[[topics]]\nname = \"heartbeat-raw-topic\"\npartitions = 1\nschema = \"heartbeat\"\nretention_bytes = 20000\n")
    s = Sluice(tmp_path / "data", env={"SLUICE_STREAM__IDLE_TIMEOUT_MS": "0"})
    s.extra_args = ["--config", str(cfg)]
    s.start()
    try:
        for batch in range(20):
            body = "\n".join(json.dumps({"playerId": "r", "heartbeat": 100, "createdAt": 1_700_000_000_000 + batch * 100 + i}) for i in range(100))
            assert requests.post(f"{s.url}/v1/topics/{TOPIC}/records", data=body, headers={"Content-Type": "application/x-ndjson"}, timeout=10).status_code == 200

        def partition():
            topics = requests.get(s.url + "/v1/topics", timeout=10).json()["topics"]
            t = next(t for t in topics if t["name"] == TOPIC)
            assert t["retention_bytes"] == 20000
            return t["partitions"][0]

        # Wait for a retention pass that ran after the last append (passes run every 100 ms).
        deadline = time.time() + 15
        while partition()["size_bytes"] >= 20000 + 4096 + 200:
            assert time.time() < deadline, f"retention did not bring the partition under its limit: {partition()}"
            time.sleep(0.1)
        p = partition()
        assert p["high_watermark"] == 2000
        assert p["log_start_offset"] > 0
        assert p["size_bytes"] >= 20000, "never below retention.bytes"
        first = s.records(TOPIC, 0, 0, 1)
        assert first["log_start_offset"] == p["log_start_offset"] and first["records"][0]["offset"] == p["log_start_offset"]
    finally:
        assert s.stop() == 0
