"""Mutual TLS: `[http.tls]` and `[kafka.tls]` with `client_ca`. A client certificate from
`sluice certs dev --client NAME` is the user its CN names: curl and requests reach the API
with it and no token, confluent-kafka and kafka-python produce and consume over SSL with it
and no SASL, with that user's role and limits. A client without a certificate, or with one
from another CA, fails the handshake; a certificate naming no user is refused (401, or
a Kafka connection that must use SASL); `client_auth = "requested"` lets token clients in."""
import json
import subprocess
import time
import uuid

import pytest
import requests

from conftest import BIN, TOPIC, Sluice
from test_auth import cli, token_for

READING = {"playerId": "m1", "heartbeat": 111, "createdAt": 1_700_000_000_000}


def certs(dir, *clients):
    args = [str(BIN), "certs", "dev", "--out", str(dir)]
    for c in clients:
        args += ["--client", c]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return dir


def start(tmp_path, client_auth="required"):
    c = certs(tmp_path / "certs", "ola", "vic", "nobody")
    certs(tmp_path / "other", "ola")  # same user name, another CA
    env = {"SLUICE_AUTH__ENABLED": "true"}
    for listener in ["HTTP", "KAFKA"]:
        env |= {f"SLUICE_{listener}__TLS__CERT": str(c / "server.pem"), f"SLUICE_{listener}__TLS__KEY": str(c / "server-key.pem"),
                f"SLUICE_{listener}__TLS__CLIENT_CA": str(c / "ca.pem"), f"SLUICE_{listener}__TLS__CLIENT_AUTH": client_auth}
    s = Sluice(tmp_path / "data", env=env)
    s.url = f"https://localhost:{s.port}"
    s.verify = str(c / "ca.pem")
    s.cert = (str(c / "vic.pem"), str(c / "vic-key.pem"))
    s.start()
    cli(s, "users", "add", "ola", "--role", "operator", "--no-password")
    cli(s, "users", "add", "vic", "--role", "viewer", "--no-password")
    return s, c


def get(s, path, cert=None, **kw):
    return requests.get(f"{s.url}{path}", cert=cert, verify=s.verify, timeout=10, **kw)


def kafka_conf(s, c, user):
    return {"bootstrap.servers": f"localhost:{s.kafka_port}", "security.protocol": "SSL", "ssl.ca.location": str(c / "ca.pem"),
            "ssl.certificate.location": str(c / f"{user}.pem"), "ssl.key.location": str(c / f"{user}-key.pem")}


def test_client_certificates_are_principals_on_both_listeners(tmp_path):
    from confluent_kafka import Consumer, Producer
    s, c = start(tmp_path)
    try:
        ola = (str(c / "ola.pem"), str(c / "ola-key.pem"))
        vic = (str(c / "vic.pem"), str(c / "vic-key.pem"))
        # HTTP: the certificate alone authenticates, with the user's role.
        who = get(s, "/v1/whoami", cert=ola)
        assert who.status_code == 200 and who.json()["user"] == "ola" and who.json()["role"] == "operator", who.text
        r = requests.post(f"{s.url}/v1/topics/{TOPIC}/records", json=READING, cert=ola, verify=s.verify, timeout=10)
        assert r.status_code == 200, r.text
        r = requests.post(f"{s.url}/v1/topics/{TOPIC}/records", json=READING, cert=vic, verify=s.verify, timeout=10)
        assert r.status_code == 403 and r.json()["error"]["permission"] == "produce", r.text
        out = subprocess.run(["curl", "-sS", "--cacert", s.verify, "--cert", ola[0], "--key", ola[1], f"{s.url}/v1/whoami"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and json.loads(out.stdout)["user"] == "ola", (out.stdout, out.stderr)
        # A certificate naming no user: 401 that says how to add the user.
        r = get(s, "/v1/whoami", cert=(str(c / "nobody.pem"), str(c / "nobody-key.pem")))
        assert r.status_code == 401 and "sluice users add nobody" in r.json()["error"]["message"], r.text
        # A token still wins over the certificate (an admin acting from ola's machine).
        admin = token_for(s, "root", "admin")
        assert get(s, "/v1/whoami", cert=ola, headers={"Authorization": f"Bearer {admin}"}).json()["user"] == "root"
        # No certificate, or one from another CA: the handshake fails.
        with pytest.raises(requests.exceptions.SSLError):
            get(s, "/healthz")
        with pytest.raises(requests.exceptions.SSLError):
            get(s, "/healthz", cert=(str(tmp_path / "other/ola.pem"), str(tmp_path / "other/ola-key.pem")))

        # Kafka over SSL with a client certificate and no SASL: produce and consume as ola.
        p = Producer({**kafka_conf(s, c, "ola"), "acks": "all"})
        errs = []
        p.produce(TOPIC, json.dumps({**READING, "playerId": "m2"}).encode(), key=b"m2", on_delivery=lambda e, m: errs.append(e))
        p.flush(15)
        assert errs == [None], errs
        cons = Consumer({**kafka_conf(s, c, "ola"), "group.id": f"mtls-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"})
        cons.subscribe([TOPIC])
        got = set()
        deadline = time.time() + 20
        while not {"m1", "m2"} <= got and time.time() < deadline:
            m = cons.poll(0.5)
            if m is not None and not m.error():
                got.add(json.loads(m.value())["playerId"])
        cons.close()
        assert {"m1", "m2"} <= got, got
        # vic's certificate: a viewer, so its produce is refused.
        p = Producer({**kafka_conf(s, c, "vic"), "acks": "all", "message.send.max.retries": 0, "message.timeout.ms": 10000})
        errs = []
        p.produce(TOPIC, b"{}", on_delivery=lambda e, m: errs.append(e))
        p.flush(15)
        assert errs and errs[0] is not None and errs[0].name() == "TOPIC_AUTHORIZATION_FAILED", errs
        # ola's topic limits apply to its certificate too.
        cli(s, "users", "acl", "ola", "--topic", "elsewhere")
        time.sleep(1)
        p = Producer({**kafka_conf(s, c, "ola"), "acks": "all", "message.send.max.retries": 0, "message.timeout.ms": 10000})
        errs = []
        p.produce(TOPIC, b"{}", on_delivery=lambda e, m: errs.append(e))
        p.flush(15)
        assert errs and errs[0] is not None and errs[0].name() == "TOPIC_AUTHORIZATION_FAILED", errs
        # kafka-python with the certificate; and without one it cannot connect.
        from kafka import KafkaProducer, errors
        cli(s, "users", "acl", "ola", "--clear")
        time.sleep(1)
        kp = KafkaProducer(bootstrap_servers=f"localhost:{s.kafka_port}", security_protocol="SSL", ssl_cafile=s.verify,
                           ssl_certfile=ola[0], ssl_keyfile=ola[1])
        assert kp.send(TOPIC, b'{"playerId":"m3","heartbeat":100,"createdAt":1700000002000}', key=b"m3").get(timeout=15).offset >= 0
        kp.close()
        with pytest.raises(errors.KafkaError):
            KafkaProducer(bootstrap_servers=f"localhost:{s.kafka_port}", security_protocol="SSL", ssl_cafile=s.verify,
                          bootstrap_timeout_ms=3000, max_block_ms=3000)
        # Certificate logins are audited, with the mechanism SSL.
        r = get(s, "/v1/topics/__audit/partitions/0/records?offset=0&max=1000", cert=ola, headers={"Authorization": f"Bearer {admin}"})
        events = [json.loads(x["value"]) if isinstance(x["value"], str) else x["value"] for x in r.json()["records"]]
        assert any(e["action"] == "login" and e["principal"] == "ola" and e["target"] == "kafka SSL" for e in events), events[-5:]
    finally:
        s.stop()


def test_requested_client_auth_lets_token_clients_in(tmp_path):
    s, c = start(tmp_path, client_auth="requested")
    try:
        admin = token_for(s, "root", "admin")
        assert get(s, "/v1/whoami", headers={"Authorization": f"Bearer {admin}"}).json()["user"] == "root"
        assert get(s, "/v1/whoami").status_code == 401
        assert get(s, "/v1/whoami", cert=(str(c / "ola.pem"), str(c / "ola-key.pem"))).json()["user"] == "ola"
        with pytest.raises(requests.exceptions.SSLError):
            get(s, "/healthz", cert=(str(tmp_path / "other/ola.pem"), str(tmp_path / "other/ola-key.pem")))
    finally:
        s.stop()
