"""TLS on both listeners (`[http.tls]`, `[kafka.tls]`) with certificates from
`sluice certs dev`: curl-style HTTPS with tokens, plain HTTP refused, Kafka SASL_SSL with
SCRAM-SHA-512 from confluent-kafka and kafka-python, a certificate reloaded on SIGHUP
without dropping open connections, and the dashboard logging in over HTTPS in Chromium."""
import json
import signal
import ssl
import subprocess
import time

import pytest
import requests

from conftest import BIN, TOPIC, Sluice
from test_auth import cli

PASSWORD = "tls-secret-12"


def certs(dir):
    r = subprocess.run([str(BIN), "certs", "dev", "--out", str(dir)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return dir / "ca.pem"


def start_tls(tmp_path):
    ca = certs(tmp_path / "certs")
    c = tmp_path / "certs"
    env = {"SLUICE_AUTH__ENABLED": "true",
           "SLUICE_HTTP__TLS__CERT": str(c / "server.pem"), "SLUICE_HTTP__TLS__KEY": str(c / "server-key.pem"),
           "SLUICE_KAFKA__TLS__CERT": str(c / "server.pem"), "SLUICE_KAFKA__TLS__KEY": str(c / "server-key.pem")}
    s = Sluice(tmp_path / "data", env=env)
    s.url = f"https://localhost:{s.port}"
    s.verify = str(ca)
    s.start()
    cli(s, "users", "add", "ola", "--role", "operator", "--password-stdin", stdin=PASSWORD + "\n")
    token = cli(s, "tokens", "create", "--user", "ola").strip().splitlines()[-1]
    return s, ca, token


def test_https_and_kafka_sasl_ssl(tmp_path):
    s, ca, token = start_tls(tmp_path)
    try:
        auth = {"Authorization": f"Bearer {token}"}
        r = requests.post(f"{s.url}/v1/topics/{TOPIC}/records", json={"playerId": "t1", "heartbeat": 99, "createdAt": 1_700_000_000_000}, headers=auth, verify=s.verify, timeout=10)
        assert r.status_code == 200, r.text
        # curl, as an operator would use it.
        out = subprocess.run(["curl", "-sS", "--cacert", str(ca), "-H", f"Authorization: Bearer {token}", f"{s.url}/v1/topics"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and TOPIC in out.stdout, out.stderr
        # Plain HTTP to the HTTPS listener gets no answer.
        with pytest.raises(requests.RequestException):
            requests.get(f"http://127.0.0.1:{s.port}/healthz", timeout=5)
        from confluent_kafka import Consumer, Producer
        conf = {"bootstrap.servers": f"localhost:{s.kafka_port}", "security.protocol": "SASL_SSL", "ssl.ca.location": str(ca),
                "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "ola", "sasl.password": PASSWORD}
        p = Producer({**conf, "acks": "all"})
        errs = []
        p.produce(TOPIC, json.dumps({"playerId": "t2", "heartbeat": 101, "createdAt": 1_700_000_001_000}).encode(), key=b"t2", on_delivery=lambda e, m: errs.append(e))
        p.flush(15)
        assert errs == [None], errs
        c = Consumer({**conf, "group.id": "tls", "auto.offset.reset": "earliest"})
        c.subscribe([TOPIC])
        got = []
        deadline = time.time() + 15
        while len(got) < 2 and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(json.loads(m.value())["playerId"])
        c.close()
        assert sorted(got) == ["t1", "t2"], got
        from kafka import KafkaProducer
        kp = KafkaProducer(bootstrap_servers=f"localhost:{s.kafka_port}", security_protocol="SASL_SSL", ssl_cafile=str(ca),
                           sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="ola", sasl_plain_password=PASSWORD)
        assert kp.send(TOPIC, b'{"playerId":"t3","heartbeat":100,"createdAt":1700000002000}', key=b"t3").get(timeout=15).offset >= 0
        kp.close()
        # A Kafka client without TLS cannot even bootstrap.
        from kafka import errors
        with pytest.raises(errors.KafkaError):
            KafkaProducer(bootstrap_servers=f"localhost:{s.kafka_port}", security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                          sasl_plain_username="ola", sasl_plain_password=PASSWORD, bootstrap_timeout_ms=3000, max_block_ms=3000)
    finally:
        s.stop()


def test_sighup_reloads_the_certificate_without_dropping_connections(tmp_path):
    s, ca, token = start_tls(tmp_path)
    try:
        auth = {"Authorization": f"Bearer {token}"}
        held = requests.Session()
        assert held.get(f"{s.url}/v1/topics", headers=auth, verify=s.verify, timeout=10).status_code == 200
        old = ssl.get_server_certificate(("localhost", s.port), ca_certs=str(ca))
        # A new CA and certificate in place of the old files, then SIGHUP.
        new_ca = certs(tmp_path / "certs")
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while ssl.get_server_certificate(("localhost", s.port)) == old and time.time() < deadline:
            time.sleep(0.2)
        assert ssl.get_server_certificate(("localhost", s.port)) != old, "the new certificate is served"
        assert requests.get(f"{s.url}/v1/topics", headers=auth, verify=str(new_ca), timeout=10).status_code == 200
        # The connection opened before the reload still works (keep-alive, old certificate).
        assert held.get(f"{s.url}/v1/topics", headers=auth, verify=s.verify, timeout=10).status_code == 200
        assert "TLS certificate reloaded" in s.log_path.read_text()
    finally:
        s.stop()


def test_the_dashboard_logs_in_over_https(tmp_path):
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright
    from test_dashboard import ARGS, CHROMIUM
    s, ca, token = start_tls(tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(s.url + "/")
            page.wait_for_url("**/login", timeout=15000)
            page.fill("#user", "ola")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(s.url + "/", timeout=15000)
            page.wait_for_selector("#status.live", timeout=15000)
            c = next(c for c in page.context.cookies() if c["name"] == "sluice_session")
            assert c["secure"] and c["httpOnly"] and c["sameSite"] == "Strict", c
            browser.close()
    finally:
        s.stop()


def test_a_bad_certificate_stops_the_start_naming_the_file(tmp_path):
    import os
    missing = tmp_path / "nope.pem"
    env = {**os.environ, "SLUICE_HTTP__TLS__CERT": str(missing), "SLUICE_HTTP__TLS__KEY": str(missing)}
    from conftest import free_port
    r = subprocess.run([str(BIN), "serve", "--data-dir", str(tmp_path / "d"), "--http-addr", f"127.0.0.1:{free_port()}", "--kafka-addr", f"127.0.0.1:{free_port()}"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert str(missing) in r.stderr and "sluice certs dev" in r.stderr, r.stderr
    assert not (tmp_path / "d").exists(), "nothing was opened before refusing"
