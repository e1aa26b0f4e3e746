"""Consumer groups and administration over the Kafka protocol, with real clients:
confluent-kafka (librdkafka), kafka-python and aiokafka."""
import asyncio
import json
import time

import requests
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import TOPIC, Sluice

# Kafka's default delay: members created back to back share the first generation even on a
# slow machine.
GROUP_ENV = {"SLUICE_KAFKA__GROUP_INITIAL_REBALANCE_DELAY_MS": "3000"}


def produce(bs, topic, ids):
    p = Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 5, "enable.idempotence": True})
    errors = []
    for i in ids:
        p.produce(topic, key=f"k{i % 64}", value=json.dumps({"id": i}), on_delivery=lambda e, m: errors.append(e) if e else None)
    assert p.flush(60) == 0 and errors == [], errors[:3]


def consumer(bs, name):
    return Consumer({"bootstrap.servers": bs, "group.id": "workers", "client.id": name, "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})


def poll_until(consumers, seen, done, timeout=60):
    """Polls every consumer (round robin) until done(); records (consumer, partition, offset, id)."""
    deadline = time.time() + timeout
    while time.time() < deadline and not done():
        for name, c in consumers.items():
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                seen.append((name, m.partition(), m.offset(), json.loads(m.value())["id"]))
    assert done(), f"timed out with {len(seen)} records"


def test_group_splits_partitions_takes_over_on_leave_and_resumes_after_kill9(tmp_path):
    s = Sluice(tmp_path / "data", env=GROUP_ENV).start()
    bs = f"127.0.0.1:{s.kafka_port}"
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic("readings", num_partitions=4, replication_factor=1)])["readings"].result(10)
    produce(bs, "readings", range(4000))

    # Two members, subscribed together (within the group's initial rebalance delay), split
    # the four partitions in the first generation.
    cs = {"a": consumer(bs, "a"), "b": consumer(bs, "b")}
    for c in cs.values():
        c.subscribe(["readings"])
    seen = []
    poll_until(cs, seen, lambda: len(seen) >= 1500 and {n for n, *_ in seen} == {"a", "b"})
    parts = {n: sorted(tp.partition for tp in c.assignment()) for n, c in cs.items()}
    assert sorted(parts["a"] + parts["b"]) == [0, 1, 2, 3] and len(parts["a"]) == 2, parts
    owners = {}
    for n, p, *_ in seen:
        owners.setdefault(p, set()).add(n)
    assert all(len(o) == 1 for o in owners.values()), f"each partition is read by one member: {owners}"

    def commit(name):
        """Commits, for the member's partitions, the offset after the last record it read."""
        last = {}
        for n, p, off, _ in seen:
            if n == name:
                last[p] = max(last.get(p, -1), off)
        tps = [TopicPartition("readings", p, o + 1) for p, o in sorted(last.items())]
        cs[name].commit(offsets=tps, asynchronous=False)
        return {tp.partition: tp.offset for tp in tps}

    committed_a = commit("a")
    commit("b")
    # a leaves (LeaveGroup); b takes over a's partitions from a's committed offsets.
    cs["a"].close()
    before = len(seen)
    poll_until({"b": cs["b"]}, seen, lambda: {i for *_, i in seen} == set(range(4000)))
    assert len(cs["b"].assignment()) == 4
    first_after = {}
    for name, p, off, _ in seen[before:]:
        first_after.setdefault(p, off)
    for p, off in committed_a.items():
        assert first_after.get(p) == off, f"partition {p}: b resumed at {first_after.get(p)}, a committed {off}"
    committed = commit("b")
    assert sorted(committed) == [0, 1, 2, 3]
    cs["b"].close()

    # SIGKILL sluice; committed offsets and every acked record survive.
    s.kill9()
    s.start()
    produce(bs, "readings", range(4000, 5000))
    c = {"c": consumer(bs, "c")}
    c["c"].subscribe(["readings"])
    after_restart = []
    everything = lambda: {i for *_, i in seen} | {i for *_, i in after_restart} == set(range(5000))
    poll_until(c, after_restart, everything)
    c["c"].close()
    first = {}
    for _, p, off, _ in after_restart:
        first.setdefault(p, off)
    assert first == {p: o for p, o in committed.items() if p in first}, "resumed exactly at the committed offsets"
    # At-least-once with nothing re-delivered from before the committed offsets.
    assert all(off >= committed[p] for _, p, off, _ in after_restart)
    s.stop()


def test_admin_apis_create_describe_alter_and_delete(sluice):
    bs = f"127.0.0.1:{sluice.kafka_port}"
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic("adm", num_partitions=3, replication_factor=1, config={"retention.ms": "3600000"})])["adm"].result(10)
    t = requests.get(f"{sluice.url}/v1/topics/adm", timeout=10).json()
    assert len(t["partitions"]) == 3
    cfg = admin.describe_configs([ConfigResource("topic", "adm")])
    entries = list(cfg.values())[0].result(10)
    assert entries["retention.ms"].value == "3600000"
    assert entries["cleanup.policy"].value == "delete"
    # Incremental alter: retention and the durability policy (flush.ms = interval flushing).
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    res = ConfigResource("topic", "adm", incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("flush.ms", "200", incremental_operation=AlterConfigOpType.SET)])
    list(admin.incremental_alter_configs([res]).values())[0].result(10)
    t = requests.get(f"{sluice.url}/v1/topics/adm", timeout=10).json()
    assert t["retention_ms"] == 7200000 and t["durability"] == {"policy": "interval", "flush_interval_ms": 200}, t
    # A config sluice cannot set, or a value out of range, is refused with a reason.
    for name, value in [("compression.type", "zstd"), ("max.message.bytes", "0")]:
        bad = ConfigResource("topic", "adm", incremental_configs=[ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
        try:
            list(admin.incremental_alter_configs([bad]).values())[0].result(10)
            raise AssertionError("expected INVALID_CONFIG")
        except Exception as e:  # confluent_kafka.KafkaException
            assert name in str(e) and "expected INVALID_CONFIG" not in str(e), e
    # The configured heart-rate topic cannot be deleted; others can.
    try:
        admin.delete_topics([TOPIC])[TOPIC].result(10)
        raise AssertionError("expected TOPIC_DELETION_DISABLED")
    except Exception as e:
        assert "TOPIC_DELETION_DISABLED" in str(e) or "deletion" in str(e).lower(), e
    admin.delete_topics(["adm"])["adm"].result(10)
    assert requests.get(f"{sluice.url}/v1/topics/adm", timeout=10).status_code == 404
    # Creating an existing topic names the error.
    try:
        admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])[TOPIC].result(10)
        raise AssertionError("expected TOPIC_ALREADY_EXISTS")
    except Exception as e:
        assert "TOPIC_ALREADY_EXISTS" in str(e) or "already exists" in str(e), e


def test_kafka_python_group_lists_and_describes_and_cli_shows_lag(sluice):
    from kafka import KafkaAdminClient, KafkaConsumer
    bs = f"127.0.0.1:{sluice.kafka_port}"
    produce(bs, "lagged", range(300))
    c = KafkaConsumer("lagged", bootstrap_servers=bs, group_id="kp", auto_offset_reset="earliest",
                      enable_auto_commit=False, max_poll_records=100)
    got = 0
    deadline = time.time() + 30
    while got < 100 and time.time() < deadline:
        for recs in c.poll(timeout_ms=500, max_records=100 - got).values():
            got += len(recs)
    c.commit()
    admin = KafkaAdminClient(bootstrap_servers=bs)
    groups = {g["group_id"]: g for g in admin.list_groups()}
    assert groups["kp"]["group_state"] == "Stable"
    described = admin.describe_groups(["kp"])["kp"]
    assert described["protocol_type"] == "consumer" and len(described["members"]) == 1
    live = sluice.run_cli("groups", "describe", "kp", "--server", sluice.url)
    assert live.returncode == 0, live.stderr
    assert "group kp: Stable" in live.stdout and "lagged[0]" in live.stdout, live.stdout
    assert requests.delete(f"{sluice.url}/v1/groups/kp", timeout=10).status_code == 409, "live members"
    c.close()
    offsets = admin.list_group_offsets("kp")
    assert sum(o.offset for o in offsets["kp"].values()) == 100
    out = sluice.run_cli("groups", "describe", "kp", "--server", sluice.url)
    assert out.returncode == 0, out.stderr
    assert "lagged" in out.stdout and "200" in out.stdout.split("lagged", 1)[1], out.stdout  # total lag 300 - 100
    admin.close()


def test_aiokafka_reads_records_ingested_over_http(sluice):
    from aiokafka import AIOKafkaConsumer
    body = [{"playerId": f"p{i % 5}", "heartbeat": 90 + i % 60, "createdAt": 1_700_000_000_000 + i} for i in range(150)]
    assert requests.post(f"{sluice.url}/v1/topics/{TOPIC}/records", json=body, timeout=10).json()["accepted"] == 150

    async def read():
        c = AIOKafkaConsumer(TOPIC, bootstrap_servers=f"127.0.0.1:{sluice.kafka_port}", group_id="aio", auto_offset_reset="earliest")
        await c.start()
        got = []
        try:
            deadline = time.time() + 30
            while len(got) < 150 and time.time() < deadline:
                for recs in (await c.getmany(timeout_ms=1000)).values():
                    got.extend((r.key.decode(), json.loads(r.value)) for r in recs)
            await c.commit()
        finally:
            await c.stop()
        return got

    got = asyncio.run(read())
    assert len(got) == 150
    assert all(k == v["playerId"] for k, v in got)
    assert sorted(v["createdAt"] for _, v in got) == [r["createdAt"] for r in body]


def test_many_concurrent_connections(sluice):
    """64 librdkafka producers (each with its own connections) at once, idempotent, each
    with its own key; every record is stored once and each key's records are in order."""
    import threading
    bs = f"127.0.0.1:{sluice.kafka_port}"
    requests.post(f"{sluice.url}/v1/topics", json={"name": "crowd", "partitions": 4}, timeout=10)
    errors = []

    def run(n):
        try:
            p = Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 2, "enable.idempotence": True})
            for i in range(200):
                p.produce("crowd", key=f"producer-{n}", value=json.dumps({"n": n, "i": i}))
            assert p.flush(60) == 0
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    c = Consumer({"bootstrap.servers": bs, "group.id": "crowd-reader", "auto.offset.reset": "earliest"})
    c.subscribe(["crowd"])
    per_producer = {}
    deadline = time.time() + 60
    while sum(len(v) for v in per_producer.values()) < 64 * 200 and time.time() < deadline:
        for m in c.consume(1000, timeout=1):
            if m.error() is None:
                v = json.loads(m.value())
                per_producer.setdefault(v["n"], []).append(v["i"])
    c.close()
    assert {n: v for n, v in per_producer.items()} == {n: list(range(200)) for n in range(64)}


def test_idempotent_producer_across_kill9_stores_each_record_once(tmp_path):
    """An idempotent librdkafka producer keeps sending while sluice is SIGKILLed (after
    15,000 acks) and restarted: every record is stored exactly once, in order per key.
    (A retry of a batch that was stored but not acked is recognised from the stored
    batches after the restart; `crates/sluice-kafka/tests/server.rs` checks that case
    directly, since a SIGKILL rarely lands in that window.)"""
    import threading
    s = Sluice(tmp_path / "data").start()
    bs = f"127.0.0.1:{s.kafka_port}"
    requests.post(f"{s.url}/v1/topics", json={"name": "once", "partitions": 2}, timeout=10)
    n = 60_000
    errors = []
    delivered = [0]

    def on_delivery(e, m):
        if e:
            errors.append(e)
        else:
            delivered[0] += 1

    def produce_all():
        p = Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 5, "enable.idempotence": True,
                      "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200})
        for i in range(n):
            while True:
                try:
                    p.produce("once", key=f"k{i % 8}", value=str(i), on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.01)
            if i % 500 == 0:
                p.poll(0)
                time.sleep(0.01)  # about 50k records/s: the kill lands mid-stream
        assert p.flush(120) == 0

    t = threading.Thread(target=produce_all)
    t.start()
    while delivered[0] < 15_000 and t.is_alive():
        time.sleep(0.001)
    s.kill9()
    s.start()
    t.join()
    assert errors == [], errors[:3]
    c = Consumer({"bootstrap.servers": bs, "group.id": "once-reader", "auto.offset.reset": "earliest"})
    c.subscribe(["once"])
    per_key = {}
    count = 0
    deadline = time.time() + 60
    while time.time() < deadline:
        msgs = c.consume(10_000, timeout=1)
        for m in msgs:
            if m.error() is None:
                per_key.setdefault(m.key(), []).append(int(m.value()))
                count += 1
        if not msgs and count >= n:
            break
    c.close()
    s.stop()
    got = sorted(i for v in per_key.values() for i in v)
    assert got == list(range(n)), f"{len(got)} stored for {n} sent: duplicates {len(got) - len(set(got))}"
    assert all(v == sorted(v) for v in per_key.values()), "each key in order"
