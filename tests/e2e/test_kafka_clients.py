"""Existing Kafka clients work against sluice's Kafka listener unchanged (first step of the
Kafka-protocol issue: producers and self-assigning consumers, with kafka-python)."""
import json
import subprocess
import sys
import time
from pathlib import Path

import requests
from kafka import KafkaConsumer, KafkaProducer

import reference
from conftest import DATA, TOPIC, Sluice

HERE = Path(__file__).parent


def test_seed_001_producer_and_consumer_run_verbatim(tmp_path):
    s = Sluice(tmp_path / "data", env={"SLUICE_KAFKA__ADDR": "127.0.0.1:9092"}).start()
    try:
        out = subprocess.run([sys.executable, str(HERE / "seed001_producer.py")], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "Message sent to topic my_topic: {'key': 'value'}" in out.stdout
        consumer = subprocess.Popen([sys.executable, str(HERE / "seed001_consumer.py")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = consumer.stdout.readline()  # the loop never ends; the first message is enough
            assert line.strip() == "Received message: {'key': 'value'}"
        finally:
            consumer.kill()
            consumer.wait()
    finally:
        s.stop()


def test_records_ingested_over_http_are_read_by_a_kafka_consumer(sluice):
    body = [{"playerId": f"p{i % 7}", "heartbeat": 100 + i % 50, "createdAt": 1_700_000_000_000 + i} for i in range(200)]
    assert requests.post(f"{sluice.url}/v1/topics/{TOPIC}/records", json=body, timeout=10).json()["accepted"] == 200
    consumer = KafkaConsumer(TOPIC, bootstrap_servers=f"127.0.0.1:{sluice.kafka_port}", auto_offset_reset="earliest", consumer_timeout_ms=5000)
    got = [(m.key.decode(), json.loads(m.value)) for m in consumer]
    consumer.close()
    assert len(got) == 200
    assert sorted(v["createdAt"] for _, v in got) == [r["createdAt"] for r in body]
    assert all(k == v["playerId"] for k, v in got), "the record key is the playerId"


def test_readings_produced_over_kafka_reach_the_heart_rate_job(sluice):
    path = DATA / "20210323_yoga.tcx"
    readings = reference.read(path)
    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{sluice.kafka_port}", key_serializer=str.encode,
                             value_serializer=lambda v: json.dumps(v).encode("utf-8"))
    for t, bpm in readings:
        producer.send(TOPIC, key="yoga-kafka", value=reference.event("yoga-kafka", t, bpm))
    producer.flush()
    producer.close()
    sluice.drain()
    got = reference.api_sessions_as_ms(sluice.sessions("yoga-kafka")["closed"])
    assert got == reference.sessions(readings)


def test_librdkafka_producer_with_every_codec_and_acks_all(tmp_path):
    """confluent-kafka (librdkafka): 100k records with each of none, gzip, snappy, lz4 and
    zstd at acks=all are stored and read back, every one, in order per partition. Segments
    are 64 KiB here, so reads cross many segment boundaries."""
    from confluent_kafka import Consumer, Producer
    sluice = Sluice(tmp_path / "data", env={"SLUICE_LOG__SEGMENT_BYTES": "65536"}).start()
    n = 100_000
    bs = f"127.0.0.1:{sluice.kafka_port}"
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        topic = f"codec-{codec}"
        assert requests.post(f"{sluice.url}/v1/topics", json={"name": topic, "partitions": 4}, timeout=10).status_code == 201
        p = Producer({"bootstrap.servers": bs, "compression.type": codec, "acks": "all", "linger.ms": 5})
        errors = []
        sent = {}  # partition -> ids in the order the broker acked them
        def on_delivery(e, m):
            if e:
                errors.append(e)
            else:
                sent.setdefault(m.partition(), []).append((m.offset(), int(m.value())))
        for i in range(n):
            while True:
                try:
                    p.produce(topic, key=f"k{i % 16}", value=str(i), on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.05)
        assert p.flush(120) == 0 and errors == [], (codec, errors[:3])
        c = Consumer({"bootstrap.servers": bs, "group.id": f"read-{codec}", "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic])
        got = {}
        count = 0
        deadline = time.time() + 120
        while count < n and time.time() < deadline:
            for m in c.consume(10_000, timeout=1):
                if m.error() is None:
                    got.setdefault(m.partition(), []).append((m.offset(), int(m.value())))
                    count += 1
        c.close()
        assert count == n, (codec, count)
        for part, recs in got.items():
            assert recs == sorted(sent[part]), f"{codec}: partition {part} reads back what was acked, in offset order"
        assert sorted(i for recs in got.values() for _, i in recs) == list(range(n)), codec
    segments = list((tmp_path / "data" / "log" / "codec-none-0").glob("*.log"))
    assert len(segments) > 3, "the reads crossed segment boundaries"
    sluice.stop()


def test_malformed_frames_close_only_their_connection(sluice):
    import errno
    import socket
    import struct

    def send_raw(data):
        with socket.create_connection(("127.0.0.1", sluice.kafka_port), timeout=5) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                return sock.recv(1024)  # b'' once the server closes the connection
            except (ConnectionResetError, BrokenPipeError):
                return b""  # closed with our bytes unread: a reset, still a close
            except OSError as e:
                if e.errno == errno.ENOTCONN:
                    return b""  # the server closed before our shutdown: already closed
                raise

    assert send_raw(struct.pack(">i", 0x7fffffff) + b"xx") == b""          # huge length prefix
    assert send_raw(struct.pack(">i", -5)) == b""                           # negative length
    assert send_raw(struct.pack(">i", 100) + b"short") == b""              # truncated frame
    assert send_raw(struct.pack(">i", 6) + bytes([0xff] * 6)) == b""       # undecodable header
    # Random bytes inside a well-formed length prefix: whatever they decode to, the
    # connection answers or closes; the server stays up.
    import random
    rng = random.Random(4)
    for _ in range(50):
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
        send_raw(struct.pack(">i", len(body)) + body)
    log = sluice.log_path.read_text(errors="replace")
    assert "frame length 2147483647" in log and "kafka connection closed" in log
    # Other clients are unaffected.
    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{sluice.kafka_port}")
    producer.send("after-garbage", b"ok").get(timeout=10)
    producer.close()


def test_invalid_readings_produced_over_kafka_go_to_the_dead_letter_topic(sluice):
    """Records failing the topic's schema are stored (offsets stay as the producer was told)
    and copied, with field and reason, to the dead-letter topic; the job skips them."""
    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{sluice.kafka_port}", key_serializer=str.encode)
    good = {"playerId": "kd", "heartbeat": 120, "createdAt": 1_700_000_000_000}
    sent = [json.dumps(good), json.dumps({"playerId": "kd", "createdAt": 1_700_000_001_000}), "not json {", json.dumps({**good, "heartbeat": -5})]
    meta = [producer.send(TOPIC, key="kd", value=v.encode()).get(timeout=10) for v in sent]
    producer.close()
    dead = [r["value"] for r in sluice.records(f"{TOPIC}.dlq")["records"]]
    assert [(d["field"], d["transport"]) for d in dead] == [("heartbeat", "kafka"), ("$", "kafka"), ("heartbeat", "kafka")], dead
    assert all(d["reason"] for d in dead)
    assert [(d["partition"], d["offset"]) for d in dead] == [(m.partition, m.offset) for m in meta[1:]]
    assert dead[1]["record"] == "not json {"
    metrics = requests.get(f"{sluice.url}/metrics", timeout=10).text
    assert 'sluice_ingest_rejected_records_total{topic="heartbeat-raw-topic",field="heartbeat"} 2' in metrics


def test_the_internal_offsets_topic_refuses_produced_records(sluice):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": f"127.0.0.1:{sluice.kafka_port}", "acks": "all", "message.send.max.retries": 0})
    errors = []
    p.produce("__consumer_offsets", key=b'["g","t",0]', value=b'{"offset":999,"commit_ms":0}', on_delivery=lambda e, m: errors.append(e))
    p.flush(10)
    assert len(errors) == 1 and errors[0] is not None and errors[0].code() == 17, errors  # INVALID_TOPIC_EXCEPTION
    assert sluice.records("__consumer_offsets")["records"] == []
