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
