"""SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and roles on the Kafka listener, with real
clients (confluent-kafka and kafka-python): every role against produce, consume with a
group, metadata and the admin APIs, plus wrong passwords and clients without SASL. The
same users as the HTTP API (`[auth] enabled = true`)."""
import json
import time
import uuid

import pytest
import requests

from conftest import TOPIC
from test_auth import audit_events, call, cli, start, token_for

READING = {"playerId": "k1", "heartbeat": 120, "createdAt": 1_700_000_000_000}
PASSWORD = "kafka-secret-1"


def users(s):
    for name, role in [("vic", "viewer"), ("ola", "operator"), ("ada", "admin")]:
        cli(s, "users", "add", name, "--role", role, "--password-stdin", stdin=PASSWORD + "\n")


def conf(s, user, mechanism="SCRAM-SHA-512", password=PASSWORD):
    return {"bootstrap.servers": f"127.0.0.1:{s.kafka_port}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": mechanism, "sasl.username": user, "sasl.password": password}


def produce(s, user, topic=TOPIC, mechanism="SCRAM-SHA-512"):
    """Produces one reading; returns the delivery error's name, or None."""
    from confluent_kafka import Producer
    p = Producer({**conf(s, user, mechanism), "acks": "all", "message.send.max.retries": 0, "message.timeout.ms": 10000})
    errors = []
    p.produce(topic, json.dumps(READING).encode(), key=b"k1", on_delivery=lambda err, msg: errors.append(err))
    p.flush(15)
    assert errors, "no delivery report"
    return errors[0].name() if errors[0] else None


def consume(s, user, topic=TOPIC):
    """Consumes with a new group; returns (records, first error name or None)."""
    from confluent_kafka import Consumer
    c = Consumer({**conf(s, user), "group.id": f"g-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got, error = [], None
    deadline = time.time() + 15
    while time.time() < deadline and not got and error is None:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            error = m.error().name()
        else:
            got.append(m.value())
    c.close()
    return got, error


def admin_create_delete(s, user):
    """Creates, then deletes, a topic; returns (create error, delete error) names."""
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient(conf(s, user))
    name = f"made-{user}-{uuid.uuid4().hex[:6]}"
    errs = []
    for fut in [a.create_topics([NewTopic(name, 1)])[name]]:
        try:
            fut.result(15)
            errs.append(None)
        except Exception as e:  # KafkaException carrying the KafkaError
            errs.append(e.args[0].name())
    target = name if errs[0] is None else TOPIC
    try:
        a.delete_topics([target])[target].result(15)
        errs.append(None)
    except Exception as e:
        errs.append(e.args[0].name())
    return tuple(errs)


def test_every_role_over_kafka_with_sasl(tmp_path):
    s, _ = start(tmp_path)
    try:
        users(s)
        from confluent_kafka.admin import AdminClient
        for user in ["vic", "ola", "ada"]:
            md = AdminClient(conf(s, user)).list_topics(timeout=15)
            assert TOPIC in md.topics, f"{user} sees the topics"
        # Produce: operators and admins; viewers get TOPIC_AUTHORIZATION_FAILED.
        assert produce(s, "vic") == "TOPIC_AUTHORIZATION_FAILED"
        assert produce(s, "ola") is None
        assert produce(s, "ada", mechanism="SCRAM-SHA-256") is None
        assert produce(s, "ola", mechanism="PLAIN") is None
        # Consume with a group: operators and admins.
        got, err = consume(s, "ola")
        assert got and err is None, err
        got, err = consume(s, "vic")
        assert not got and err in ("GROUP_AUTHORIZATION_FAILED", "TOPIC_AUTHORIZATION_FAILED"), err
        # Admin APIs: admins only.
        assert admin_create_delete(s, "ada") == (None, None)
        assert admin_create_delete(s, "ola") == ("TOPIC_AUTHORIZATION_FAILED", "TOPIC_AUTHORIZATION_FAILED")
        assert admin_create_delete(s, "vic") == ("TOPIC_AUTHORIZATION_FAILED", "TOPIC_AUTHORIZATION_FAILED")
        # The audit topic: admins only.
        got, err = consume(s, "ola", topic="__audit")
        assert not got and err == "TOPIC_AUTHORIZATION_FAILED", err
        got, err = consume(s, "ada", topic="__audit")
        assert got, "an admin reads the audit topic"
        first = json.loads(got[0])
        assert {"action", "principal", "source", "target", "time_ms"} <= set(first), first
    finally:
        s.stop()


def test_kafka_python_scram_and_wrong_passwords(tmp_path, caplog):
    from kafka import KafkaConsumer, KafkaProducer, errors
    s, _ = start(tmp_path)
    try:
        users(s)
        bs = f"127.0.0.1:{s.kafka_port}"
        kw = dict(bootstrap_servers=bs, security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="ola")
        p = KafkaProducer(**kw, sasl_plain_password=PASSWORD)
        md = p.send(TOPIC, json.dumps(READING).encode(), key=b"k1").get(timeout=15)
        assert md.offset >= 0
        p.close()
        c = KafkaConsumer(TOPIC, **kw, sasl_plain_password=PASSWORD, group_id="kp", auto_offset_reset="earliest", consumer_timeout_ms=10000)
        assert next(iter(c)).value
        c.close()
        # kafka-python 3 surfaces the broker's SASL_AUTHENTICATION_FAILED (error 58) as a
        # connection error it logs, then gives up bootstrapping.
        caplog.clear()
        with pytest.raises(errors.KafkaError):
            KafkaProducer(**kw, sasl_plain_password="wrong", bootstrap_timeout_ms=4000, max_block_ms=4000)
        assert any("SaslAuthenticationFailedError" in r.getMessage() and "wrong user name or password" in r.getMessage() for r in caplog.records), \
            [r.getMessage() for r in caplog.records][-5:]
        # A client without SASL is disconnected: it cannot even bootstrap.
        with pytest.raises(errors.KafkaError):
            KafkaProducer(bootstrap_servers=bs, bootstrap_timeout_ms=3000, max_block_ms=3000)
        # Failed logins are audited, with the client's address.
        admin = token_for(s, "root", "admin")
        kafka_failure = lambda e: e["action"] == "login_failed" and e["target"].startswith("kafka ")
        events = audit_events(s, admin, kafka_failure)
        failed = [e for e in events if kafka_failure(e)]
        assert failed and failed[0]["source"].startswith("127.0.0.1:"), events
        assert any(e["action"] == "login" and e["principal"] == "ola" and e["target"] == "kafka SCRAM-SHA-512" for e in events)
    finally:
        s.stop()


def test_a_non_loopback_kafka_listener_is_allowed_with_authentication(tmp_path):
    from conftest import Sluice
    s = Sluice(tmp_path / "data", env={"SLUICE_AUTH__ENABLED": "true"})
    s.env["SLUICE_KAFKA__ADDR"] = f"0.0.0.0:{s.kafka_port}"
    s.start()
    try:
        assert requests.get(s.url + "/healthz", timeout=10).status_code == 200
    finally:
        s.stop()


def test_repeated_failed_logins_lock_the_address_out(tmp_path, caplog):
    from kafka import KafkaProducer, errors
    s, _ = start(tmp_path)
    try:
        users(s)
        for _ in range(10):
            assert requests.post(s.url + "/v1/login", json={"user": "ola", "password": "guess"}, timeout=30).status_code == 401
        r = requests.post(s.url + "/v1/login", json={"user": "ola", "password": PASSWORD}, timeout=30)
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_failed_logins", r.text
        assert int(r.headers["Retry-After"]) > 0
        # The Kafka listener shares the lockout: even the right password is refused.
        caplog.clear()
        with pytest.raises(errors.KafkaError):
            KafkaProducer(bootstrap_servers=f"127.0.0.1:{s.kafka_port}", security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                          sasl_plain_username="ola", sasl_plain_password=PASSWORD, bootstrap_timeout_ms=3000, max_block_ms=3000)
        assert any("too many failed logins" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records][-3:]
    finally:
        s.stop()
