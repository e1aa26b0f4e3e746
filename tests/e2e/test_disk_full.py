"""A full disk (a real 3 MB tmpfs): the write that hits ENOSPC is refused with a clear 503,
the log is poisoned (every later write refused until restart), reads keep working, and
after more space and a restart every acknowledged record is there."""
import json
import subprocess

import pytest
import requests

from conftest import TOPIC, Sluice


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_refuses_writes_keeps_reads_and_loses_nothing_acked(small_disk):
    s = Sluice(small_disk / "data", env={"SLUICE_STREAM__ENABLED": "false"}, log_path=small_disk.parent / "sluice.log")
    s.start()
    acked, n, failure = [], 0, None
    for _ in range(400):
        body = "\n".join(json.dumps({"playerId": f"p{n + i}", "heartbeat": 100, "createdAt": 1_700_000_000_000 + n + i}) for i in range(500))
        r = requests.post(f"{s.url}/v1/topics/{TOPIC}/records", data=body, headers={"Content-Type": "application/x-ndjson"}, timeout=30)
        if r.status_code != 200:
            failure = r
            break
        acked += [(o["partition"], o["offset"]) for o in r.json()["offsets"]]
        n += 500
    assert failure is not None, "the 3 MB disk never filled"
    assert failure.status_code == 503 and failure.json()["error"]["code"] == "log_unavailable"
    assert "No space left on device" in failure.json()["error"]["message"]
    again = requests.post(f"{s.url}/v1/topics/{TOPIC}/records",
                          json={"playerId": "late", "heartbeat": 90, "createdAt": 1_700_000_000_000}, timeout=10)
    assert again.status_code == 503 and "refuses writes" in again.json()["error"]["message"]
    health = requests.get(s.url + "/healthz", timeout=10)
    assert health.status_code == 503 and health.json()["log"]["writable"] is False
    # Reads keep working.
    assert len(s.records(TOPIC, 0, 0, 10)["records"]) == 10
    s.kill9()

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    s.start()
    for p in (0, 1):
        stored = set()
        offset = 0
        while True:
            page = s.records(TOPIC, p, offset, 10000)["records"]
            if not page:
                break
            stored.update(r["offset"] for r in page)
            offset = page[-1]["offset"] + 1
        missing = [o for (pp, o) in acked if pp == p and o not in stored]
        assert not missing, f"partition {p}: {len(missing)} acknowledged records lost"
    ok = requests.post(f"{s.url}/v1/topics/{TOPIC}/records",
                       json={"playerId": "after", "heartbeat": 90, "createdAt": 1_700_000_000_000}, timeout=10)
    assert ok.status_code == 200, "a restart with space clears the poison"
    s.kill9()
