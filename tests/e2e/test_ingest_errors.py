"""Bad input over HTTP and WebSocket: each bad record gets its own error, valid siblings are
stored, every rejected record is kept in the dead-letter topic, whole-request errors are 4xx."""
import json

import requests
from websockets.sync.client import connect

from conftest import TOPIC, Sluice

GOOD = {"playerId": "ann", "heartbeat": 120, "createdAt": [2023, 11, 23, 10, 0, 0, 0]}


def post(s, body, topic=TOPIC, ctype="application/json"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{s.url}/v1/topics/{topic}/records", data=data, headers={"Content-Type": ctype}, timeout=10)


def dlq(s):
    return [r["value"] for r in s.records(TOPIC + ".dlq")["records"]]


def test_each_bad_record_named_and_siblings_kept(sluice):
    body = [
        GOOD,
        {"playerId": "ann", "heartbeat": 400, "createdAt": [2023, 11, 23, 10, 0, 1, 0]},
        {"heartbeat": 80, "createdAt": "2023-11-23T10:00:02Z"},
        {"playerId": "bob", "heartbeat": "80", "createdAt": 1700733602000},
        {"playerId": "bob", "heartbeat": 80, "createdAt": [2023, 2, 30, 0, 0, 0, 0]},
        "not an object",
        {"playerId": "bob", "heartbeat": 81.5, "createdAt": 1700733603000},
    ]
    r = post(sluice, body)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["accepted"] == 2 and j["rejected"] == 5
    assert [o["index"] for o in j["offsets"]] == [0, 6]
    errors = {e["index"]: e for e in j["errors"]}
    assert errors[1]["field"] == "heartbeat" and "400" in errors[1]["reason"]
    assert errors[2]["field"] == "playerId" and errors[2]["reason"] == "missing"
    assert errors[3]["field"] == "heartbeat" and "number" in errors[3]["reason"]
    assert errors[4]["field"] == "createdAt" and "calendar" in errors[4]["reason"]
    assert errors[5]["field"] == "$"
    dead = dlq(sluice)
    assert sorted(d["index"] for d in dead) == [1, 2, 3, 4, 5]
    assert all(d["reason"] and d["field"] and d["record"] for d in dead)
    # The accepted records are readable at the offsets the ack named.
    for o in j["offsets"]:
        rec = sluice.records(TOPIC, o["partition"], o["offset"], 1)["records"][0]
        assert rec["offset"] == o["offset"]
    metrics = requests.get(sluice.url + "/metrics", timeout=10).text
    assert 'sluice_ingest_rejected_records_total{topic="heartbeat-raw-topic",field="heartbeat"} 2' in metrics


def test_all_rejected_is_422_and_kept(sluice):
    r = post(sluice, {"playerId": "ann", "heartbeat": 10, "createdAt": 0})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "heartbeat"
    assert len(dlq(sluice)) == 1


def test_ndjson_bad_line_does_not_sink_the_batch(sluice):
    lines = [json.dumps(GOOD), "{\"playerId\": oops", json.dumps({**GOOD, "createdAt": [2023, 11, 23, 10, 0, 5, 0]})]
    r = post(sluice, "\n".join(lines), ctype="application/x-ndjson")
    assert r.status_code == 200
    j = r.json()
    assert j["accepted"] == 2 and j["errors"][0]["index"] == 1 and "malformed JSON" in j["errors"][0]["reason"]
    assert dlq(sluice)[0]["record"] == "{\"playerId\": oops"


def test_whole_request_errors(sluice):
    r = post(sluice, b"{\"playerId\": ")
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"
    assert "line 1" in r.json()["error"]["message"]
    assert len(dlq(sluice)) == 1, "even a malformed body is kept"
    r = post(sluice, GOOD, topic="no-such-topic")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_topic"
    r = post(sluice, b"")
    assert r.status_code == 400 and "empty" in r.json()["error"]["message"]


def test_oversized_body_is_413(tmp_path):
    s = Sluice(tmp_path / "data", env={"SLUICE_HTTP__MAX_BODY_BYTES": "1000"}).start()
    try:
        r = post(s, [GOOD] * 100)
        assert r.status_code == 413
        assert "max_body_bytes" in r.json()["error"]["message"]
        assert post(s, GOOD).status_code == 200
    finally:
        s.stop()


def test_websocket_acks_in_order_with_per_record_errors(sluice):
    with connect(f"ws://127.0.0.1:{sluice.port}/v1/topics/{TOPIC}/ws") as ws:
        ws.send(json.dumps(GOOD))
        ws.send("\n".join([json.dumps({**GOOD, "createdAt": [2023, 11, 23, 10, 0, s, 0]}) for s in (1, 2)] + [json.dumps({**GOOD, "heartbeat": None})]))
        ws.send("{broken")
        acks = [json.loads(ws.recv(timeout=10)) for _ in range(3)]
    assert [a["seq"] for a in acks] == [0, 1, 2]
    assert acks[0]["accepted"] == 1
    assert acks[1]["accepted"] == 2 and acks[1]["errors"][0] == {"index": 2, "field": "heartbeat", "reason": "expected a number (bpm), got null"}
    assert acks[2]["error"]["code"] == "malformed_json"
    assert len(dlq(sluice)) == 2
    # Same player, same partition, consecutive offsets.
    parts = {o["partition"] for a in acks[:2] for o in a["offsets"]}
    assert len(parts) == 1


def test_websocket_unknown_topic_is_refused(sluice):
    r = requests.get(f"{sluice.url}/v1/topics/nope/ws", headers={"Connection": "Upgrade", "Upgrade": "websocket",
                     "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, timeout=10)
    assert r.status_code == 404
