"""Ingest at the edge: `sluice serve --log kafka://HOST:PORT` keeps the HTTP and WebSocket
gateway but appends to an external Kafka-protocol cluster, through librdkafka with an
idempotent acks=all producer, instead of its embedded log. The cluster here is another
`sluice serve`: its Kafka listener over its own log.

Every device ack names a partition and an offset where the cluster holds that record.
Killing the gateway with SIGKILL while frames are in flight loses nothing that was
acknowledged."""
import json
import os
import random

import requests

from conftest import TOPIC, Sluice
from test_crash_recovery import frames, readings, send_all

GOOD = {"playerId": "ann", "heartbeat": 120, "createdAt": 1700733600000}


def value(r):
    return json.loads(r["value"]) if isinstance(r["value"], str) else r["value"]


def partitions(s, topic):
    topics = requests.get(s.url + "/v1/topics", timeout=10).json()["topics"]
    return len(next(t for t in topics if t["name"] == topic)["partitions"])


def stored(s, topic):
    """Every record of `topic` on server `s`, by (partition, offset)."""
    out = {}
    for p in range(partitions(s, topic)):
        offset = 0
        while True:
            page = s.records(topic, p, offset, 10000)["records"]
            if not page:
                break
            for r in page:
                out[(p, r["offset"])] = r
            offset = page[-1]["offset"] + 1
    return out


def edge_of(cluster, tmp_path, env=None):
    edge = Sluice(tmp_path / "edge" / "data", log_path=tmp_path / "edge.log", env=env)
    edge.extra_args = ["--log", f"kafka://127.0.0.1:{cluster.kafka_port}"]
    return edge.start()


def test_each_ack_names_the_record_on_the_cluster(tmp_path):
    cluster = Sluice(tmp_path / "cluster" / "data", log_path=tmp_path / "cluster.log").start()
    try:
        edge = edge_of(cluster, tmp_path)
        try:
            body = [GOOD, {**GOOD, "heartbeat": 400}, {**GOOD, "playerId": "bob", "createdAt": 1700733601000}]
            r = requests.post(f"{edge.url}/v1/topics/{TOPIC}/records", json=body, timeout=30)
            assert r.status_code == 200, r.text
            ack = r.json()
            assert ack["accepted"] == 2 and ack["rejected"] == 1, ack
            for o, sent in zip(ack["offsets"], [body[0], body[2]]):
                rec = cluster.records(TOPIC, o["partition"], o["offset"], 1)["records"][0]
                assert rec["offset"] == o["offset"] and value(rec) == sent, (o, rec)
            dead = [value(x) for x in cluster.records(TOPIC + ".dlq")["records"]]
            assert len(dead) == 1 and dead[0]["field"] == "heartbeat" and dead[0]["reason"], dead
            # Nothing went to the edge's own log, and it runs no pipelines.
            assert all(not edge.records(TOPIC, p, 0, 10)["records"] for p in range(partitions(edge, TOPIC)))
            assert requests.get(edge.url + "/v1/pipelines", timeout=10).json()["pipelines"] == []
            # WebSocket frames are acknowledged the same way.
            from websockets.sync.client import connect
            with connect(f"ws://127.0.0.1:{edge.port}/v1/topics/{TOPIC}/ws") as ws:
                ws.send(json.dumps({**GOOD, "createdAt": 1700733602000}))
                o = json.loads(ws.recv(timeout=30))["offsets"][0]
            assert value(cluster.records(TOPIC, o["partition"], o["offset"], 1)["records"][0])["createdAt"] == 1700733602000
            metrics = requests.get(edge.url + "/metrics", timeout=10).text
            assert f'sluice_cluster_append_duration_seconds_count{{topic="{TOPIC}"}} 2' in metrics, "one append per request"
        finally:
            edge.stop()
    finally:
        cluster.stop()


def test_an_unreachable_cluster_is_a_503_that_names_it_and_acknowledges_nothing(tmp_path):
    cluster = Sluice(tmp_path / "cluster" / "data", log_path=tmp_path / "cluster.log").start()
    edge = edge_of(cluster, tmp_path, env={"SLUICE_CLUSTER__ACK_TIMEOUT_MS": "3000"})
    try:
        cluster.kill9()
        r = requests.post(f"{edge.url}/v1/topics/{TOPIC}/records", json=GOOD, timeout=60)
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "cluster_unavailable" and f"127.0.0.1:{cluster.kafka_port}" in err["message"], err
        metrics = requests.get(edge.url + "/metrics", timeout=10).text
        assert f'sluice_cluster_append_failures_total{{topic="{TOPIC}"}} 1' in metrics
    finally:
        edge.stop()


def test_sigkill_of_the_gateway_loses_no_acknowledged_reading(tmp_path):
    seed = int(os.environ.get("E2E_SEED", random.randrange(1 << 30)))
    print(f"E2E_SEED={seed}")
    rng = random.Random(seed)
    per_player = readings()
    frs = frames(per_player)
    cluster = Sluice(tmp_path / "cluster" / "data", log_path=tmp_path / "cluster.log").start()
    try:
        edge = edge_of(cluster, tmp_path)
        try:
            kills = send_all(edge, frs, rng.sample(range(2, len(frs) - 2), 8))
            assert kills == 8
        finally:
            edge.stop()
        def reading(e):
            return e["playerId"], json.dumps(e["createdAt"]), e["heartbeat"]
        on_cluster = {reading(v) for v in map(value, stored(cluster, TOPIC).values())}
        sent = [reading(e) for f in frs for e in f]
        missing = [r for r in sent if r not in on_cluster]
        assert not missing, f"{len(missing)} of {len(sent)} acknowledged readings are not on the cluster: {missing[:5]}"
    finally:
        cluster.stop()


def test_topics_missing_on_the_cluster_are_created_with_the_configured_partitions(tmp_path):
    cluster = Sluice(tmp_path / "cluster" / "data", log_path=tmp_path / "cluster.log").start()
    try:
        cfg = tmp_path / "edge.toml"
        cfg.write_text('[[topics]]\nname = "heartbeat-raw-topic"\npartitions = 2\nschema = "heartbeat"\n\n'
                       '[[topics]]\nname = "watch-events"\npartitions = 3\n')
        edge = Sluice(tmp_path / "edge" / "data", log_path=tmp_path / "edge.log")
        edge.extra_args = ["--config", str(cfg), "--log", f"kafka://127.0.0.1:{cluster.kafka_port}"]
        edge.start()
        try:
            assert partitions(cluster, "watch-events") == 3
            assert partitions(cluster, "watch-events.dlq") == 1
            r = requests.post(f"{edge.url}/v1/topics/watch-events/records", json=[{"device": f"w{i}", "x": i} for i in range(30)], timeout=30)
            assert r.status_code == 200 and r.json()["accepted"] == 30, r.text
            assert len(stored(cluster, "watch-events")) == 30
            # A topic created at the edge at runtime is created on the cluster at its first records.
            r = requests.post(f"{edge.url}/v1/topics", json={"name": "phone-events", "partitions": 2}, timeout=10)
            assert r.status_code in (200, 201), r.text
            r = requests.post(f"{edge.url}/v1/topics/phone-events/records", json={"phone": "p1"}, timeout=30)
            assert r.status_code == 200, r.text
            assert partitions(cluster, "phone-events") == 2 and len(stored(cluster, "phone-events")) == 1
        finally:
            edge.stop()
    finally:
        cluster.stop()
