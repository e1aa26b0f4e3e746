"""Consumer-group offsets are stored in the log (internal topic __consumer_offsets): they
survive a SIGKILL, show lag, and the internal topic is protected."""
import requests

from conftest import TOPIC


def test_committed_offsets_survive_kill_and_show_lag(sluice):
    body = [{"playerId": f"p{i}", "heartbeat": 100, "createdAt": 1_700_000_000_000 + i} for i in range(50)]
    offsets = requests.post(f"{sluice.url}/v1/topics/{TOPIC}/records", json=body, timeout=10).json()["offsets"]
    hw = {p: sum(1 for o in offsets if o["partition"] == p) for p in (0, 1)}
    r = requests.post(f"{sluice.url}/v1/groups/dash/offsets", timeout=10,
                      json={"offsets": [{"topic": TOPIC, "partition": 0, "offset": 3, "metadata": "m"}, {"topic": TOPIC, "partition": 1, "offset": 1}]})
    assert r.status_code == 200, r.text
    bad = requests.post(f"{sluice.url}/v1/groups/dash/offsets", json={"offsets": [{"topic": "nope", "partition": 0, "offset": 1}]}, timeout=10)
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "unknown_topic_or_partition"

    sluice.kill9()
    sluice.start()
    g = requests.get(f"{sluice.url}/v1/groups/dash", timeout=10).json()
    got = {o["partition"]: (o["offset"], o["lag"], o["metadata"]) for o in g["offsets"]}
    assert got == {0: (3, hw[0] - 3, "m"), 1: (1, hw[1] - 1, "")}
    r = sluice.run_cli("groups", "--server", sluice.url, "describe", "dash", timeout=30)
    assert r.returncode == 0 and str(hw[0] - 3) in r.stdout and TOPIC in r.stdout, r.stdout + r.stderr
    assert sluice.run_cli("groups", "--server", sluice.url, "list", timeout=30).stdout.split() == ["dash"]

    # The internal topic takes no client records and cannot be deleted.
    r = requests.post(f"{sluice.url}/v1/topics/__consumer_offsets/records", json={"x": 1}, timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "internal_topic"
    assert requests.delete(f"{sluice.url}/v1/topics/__consumer_offsets", timeout=10).status_code == 409

    assert requests.delete(f"{sluice.url}/v1/groups/dash", timeout=10).status_code == 200
    sluice.kill9()
    sluice.start()
    assert requests.get(f"{sluice.url}/v1/groups/dash", timeout=10).status_code == 404
