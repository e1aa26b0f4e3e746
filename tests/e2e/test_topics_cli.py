"""`sluice topics` against a running server: create, list, describe, alter, delete."""
import requests

from conftest import TOPIC


def test_topic_lifecycle_through_the_cli(sluice):
    def cli(*args):
        return sluice.run_cli("topics", "--server", sluice.url, *args, timeout=30)

    r = cli("create", "events", "--partitions", "3", "--retention-ms", "86400000")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("events ") == 3 and "1d" in r.stdout
    r = cli("list")
    assert r.returncode == 0 and TOPIC in r.stdout and TOPIC + ".dlq" in r.stdout and "events" in r.stdout
    # The new topic takes any JSON object.
    ok = requests.post(f"{sluice.url}/v1/topics/events/records", json=[{"a": 1}, {"b": 2}], timeout=10)
    assert ok.status_code == 200 and ok.json()["accepted"] == 2
    r = cli("alter", "events", "--retention-bytes", "1048576")
    assert r.returncode == 0 and "1d/1048576B" in r.stdout
    assert requests.get(f"{sluice.url}/v1/topics/events", timeout=10).json()["retention_bytes"] == 1048576

    r = cli("create", "events")
    assert r.returncode != 0 and "already exists" in r.stderr
    r = cli("create", "bad/name")
    assert r.returncode != 0 and "invalid" in r.stderr
    r = cli("delete", TOPIC)
    assert r.returncode != 0 and "named in the configuration" in r.stderr

    r = cli("delete", "events")
    assert r.returncode == 0, r.stderr
    assert requests.get(f"{sluice.url}/v1/topics/events", timeout=10).status_code == 404
    assert not list((sluice.data_dir / "log").glob("events-*"))
    r = cli("describe", "events")
    assert r.returncode != 0 and "does not exist" in r.stderr
