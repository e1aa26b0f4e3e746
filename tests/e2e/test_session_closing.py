"""Sessions close without an explicit end of input: by the watermark, and by the idle timeout."""
import json
import time

import requests

import reference
from conftest import TOPIC, Sluice

T0 = 1_700_000_000_000


def post(s, player, times_s, bpm=120):
    body = "\n".join(json.dumps(reference.event(player, T0 + t * 1000, bpm)) for t in times_s)
    r = requests.post(f"{s.url}/v1/topics/{TOPIC}/records", data=body, headers={"Content-Type": "application/x-ndjson"}, timeout=10)
    assert r.status_code == 200, r.text


def wait_for(pred, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_watermark_closes_a_session_when_a_later_one_starts(sluice):
    post(sluice, "w", range(0, 30))
    post(sluice, "w", [400])  # 371 s later: watermark 390 s > 29 s + 300 s
    closed = wait_for(lambda: sluice.sessions("w")["closed"])
    # 120 bpm is 0.63 of HRmax 190: low.
    assert len(closed) == 1 and closed[0]["samples"] == 30 and closed[0]["low_s"] == 30.0
    open_ = sluice.sessions("w")["open"]
    assert len(open_) == 1 and open_[0]["samples"] == 1 and not open_[0]["closed"]


def test_idle_timeout_closes_sessions_when_input_stops(tmp_path):
    s = Sluice(tmp_path / "data", env={"SLUICE_STREAM__IDLE_TIMEOUT_MS": "1000"}).start()
    try:
        post(s, "idle", range(0, 30))
        # No drain and no later reading: only the idle timeout can close this session.
        closed = wait_for(lambda: s.sessions("idle")["closed"])
        assert closed[0]["samples"] == 30
        health = requests.get(s.url + "/healthz", timeout=10).json()
        assert health["status"] == "ok"
        hr = next(p for p in health["pipelines"] if p["name"] == "heart_rate")
        assert hr["state"] == "running" and hr["records"] == 30 and hr["lag_records"] == 0
    finally:
        assert s.stop() == 0
