"""Defects found by testing as a new user would: web pages driving the API, slow and idle
connections, running out of file descriptors, WebSocket memory, oversized Kafka batches and
pre-1970 timestamps. Each runs the real binary and real clients."""
import http.server
import json
import os
import resource
import socket
import threading
import time

import pytest
import requests

from conftest import TOPIC, Sluice
from test_dashboard import ARGS, CHROMIUM

GOOD = {"playerId": "ann", "heartbeat": 120, "createdAt": [2023, 11, 23, 10, 0, 0, 0]}


def stored(s, topic=TOPIC):
    t = requests.get(f"{s.url}/v1/topics/{topic}", timeout=10).json()
    return sum(p["high_watermark"] for p in t["partitions"])


def test_requests_a_web_page_could_send_are_refused(sluice):
    url = f"{sluice.url}/v1/topics/{TOPIC}/records"
    body = json.dumps(GOOD)
    # What an HTML form or a no-cors fetch can send without a CORS preflight.
    for ctype in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]:
        r = requests.post(url, data=body, headers={"Content-Type": ctype}, timeout=10)
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type", r.text
        assert "application/json" in r.json()["error"]["message"]
    evil = {"Origin": "http://evil.example", "Content-Type": "application/json"}
    assert requests.post(url, data=body, headers=evil, timeout=10).status_code == 403
    assert requests.delete(f"{sluice.url}/v1/topics/{TOPIC}", headers=evil, timeout=10).status_code == 403
    assert requests.post(f"{sluice.url}/v1/pipelines/heart_rate/drain", headers=evil, timeout=10).status_code == 403
    assert stored(sluice) == 0, "nothing refused was stored"
    # DNS rebinding: the attacker's name pointed at 127.0.0.1 reaches the socket, not the API.
    r = requests.get(f"{sluice.url}/v1/sessions", headers={"Host": f"rebind.attacker.example:{sluice.port}"}, timeout=10)
    assert r.status_code == 421 and r.json()["error"]["code"] == "host_not_allowed", r.text
    assert "http.allowed_hosts" in r.json()["error"]["message"]
    # The API's own origin, clients without an Origin, and localhost still work.
    own = {"Origin": sluice.url, "Content-Type": "application/json"}
    assert requests.post(url, data=body, headers=own, timeout=10).status_code == 200
    assert requests.post(url.replace("127.0.0.1", "localhost"), json=GOOD, timeout=10).status_code == 200
    assert stored(sluice) == 2


def test_a_cross_site_page_in_a_browser_cannot_ingest_or_drain(sluice):
    """A page on another origin, in headless Chromium, tries what a malicious site would."""
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            html = f"""<html><body>
<form id=f method=POST enctype=text/plain action="{sluice.url}/v1/topics/{TOPIC}/records">
<input name='{{"playerId":"form","heartbeat":120,"createdAt":1700000000000,"x":"' value='"}}'></form>
<script>
fetch("{sluice.url}/v1/topics/{TOPIC}/records", {{method: "POST", mode: "no-cors",
  headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({json.dumps(GOOD)})}});
fetch("{sluice.url}/v1/topics/{TOPIC}/records", {{method: "POST", mode: "no-cors",
  body: JSON.stringify({json.dumps(GOOD)})}});
fetch("{sluice.url}/v1/pipelines/heart_rate/drain", {{method: "POST", mode: "no-cors"}});
setTimeout(() => document.getElementById("f").submit(), 500);
</script></body></html>"""
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(html.encode())

        def log_message(self, *a):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Page)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    from playwright.sync_api import sync_playwright
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            pg = browser.new_page()
            pg.goto(f"http://127.0.0.2:{other.server_address[1]}/")
            time.sleep(3)
            browser.close()
    finally:
        other.shutdown()
    assert stored(sluice) == 0, "a cross-site page stored records"
    assert stored(sluice, TOPIC + ".dlq") == 0, "nor did its requests reach validation"
    metrics = requests.get(f"{sluice.url}/metrics", timeout=10).text
    refused = sum(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("sluice_http_refused_requests_total{"))
    assert refused >= 3, metrics


def test_pre_1970_timestamps_are_refused_in_every_form(sluice):
    url = f"{sluice.url}/v1/topics/{TOPIC}/records"
    for at in ["0001-01-01T00:00:00Z", -62135596800000, [1, 1, 1, 0, 0, 0, 0], "1969-12-31T23:59:59Z"]:
        r = requests.post(url, json={"playerId": "ann", "heartbeat": 120, "createdAt": at}, timeout=10)
        assert r.status_code == 422, (at, r.text)
        assert r.json()["errors"][0]["field"] == "createdAt"
    assert stored(sluice) == 0


def slow_sockets(port, n, payload):
    socks = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        if payload:
            c.sendall(payload)
        socks.append(c)
    return socks


def closed(sock):
    sock.settimeout(0.05)
    try:
        return sock.recv(4096) == b"" or closed_after_data(sock)
    except socket.timeout:
        return False
    except OSError:
        return True


def closed_after_data(sock):
    # A 408 or error response may come first; the connection must then close.
    try:
        while True:
            if sock.recv(4096) == b"":
                return True
    except socket.timeout:
        return False
    except OSError:
        return True


def test_slow_and_idle_connections_are_closed(tmp_path):
    s = Sluice(tmp_path / "data", env={"SLUICE_HTTP__HEADER_READ_TIMEOUT_MS": "1000", "SLUICE_HTTP__REQUEST_BODY_TIMEOUT_MS": "1000",
                                       "SLUICE_KAFKA__CONNECTIONS_MAX_IDLE_MS": "1500", "SLUICE_KAFKA__REQUEST_READ_TIMEOUT_MS": "1000"}).start()
    try:
        idle = slow_sockets(s.port, 200, b"")
        slowloris = slow_sockets(s.port, 50, b"GET /healthz HTTP/1.1\r\n")
        slow_body = slow_sockets(s.port, 20, f"POST /v1/topics/{TOPIC}/records HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{".encode())
        kafka_idle = slow_sockets(s.kafka_port, 50, b"")
        kafka_slow = slow_sockets(s.kafka_port, 50, b"\x00\x00\x01\x00")
        t0 = time.time()
        while time.time() - t0 < 2.5:  # slowloris: one more header byte every 100 ms
            for c in slowloris + kafka_slow:
                try:
                    c.sendall(b"X")
                except OSError:
                    pass
            time.sleep(0.1)
        time.sleep(0.5)
        for name, group in [("idle http", idle), ("slow header", slowloris), ("slow body", slow_body), ("idle kafka", kafka_idle), ("slow kafka frame", kafka_slow)]:
            still = sum(not closed(c) for c in group)
            assert still == 0, f"{still} of {len(group)} {name} connections still open after 3 s"
        assert requests.get(s.url + "/healthz", timeout=5).status_code == 200
    finally:
        s.stop()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


def test_an_idle_device_websocket_costs_little_memory(sluice):
    """5,000 devices, each on its own WebSocket: the server's resident memory per idle
    connection stays under 16 KB (it was about 150 KB)."""
    import asyncio
    import websockets

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    n = min(5000, hard - 200)
    url = f"ws://127.0.0.1:{sluice.port}/v1/topics/{TOPIC}/ws"

    async def main():
        conns = []
        for i in range(0, n, 250):
            conns += await asyncio.gather(*[websockets.connect(url, max_size=None, compression=None) for _ in range(i, min(n, i + 250))])
        before = rss_kb(sluice.proc.pid)
        for i, c in enumerate(conns):
            await c.send(json.dumps({"playerId": f"d{i}", "heartbeat": 90, "createdAt": 1_700_000_000_000 + i}))
        acks = await asyncio.gather(*[c.recv() for c in conns])
        assert all(json.loads(a)["accepted"] == 1 for a in acks)
        await asyncio.sleep(1)
        after = rss_kb(sluice.proc.pid)
        for c in conns:
            await c.close()
        return before, after

    base = rss_kb(sluice.proc.pid)
    before, after = asyncio.run(main())
    idle_kb, used_kb = (before - base) / n, (after - base) / n
    print(f"{n} WebSockets: server RSS {base} KB alone, {before} KB connected ({idle_kb:.1f} KB each), "
          f"{after} KB after one reading each ({used_kb:.1f} KB each, ingest threads included)")
    assert idle_kb < 16, f"{idle_kb:.1f} KB per idle WebSocket"
    # After a reading, the blocking threads that ran the appends are counted in too.
    assert used_kb < 32, f"{used_kb:.1f} KB per WebSocket after one reading"
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_running_out_of_file_descriptors_does_not_spin(tmp_path):
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    s = Sluice(tmp_path / "data")
    s.preexec = low_limit
    s.start()
    try:
        with open(f"/proc/{s.proc.pid}/limits") as f:
            assert any(l.startswith("Max open files") and "256" in l for l in f)
        log_before = s.log_path.stat().st_size
        conns = slow_sockets(s.kafka_port, 300, b"")  # more than the server can hold
        time.sleep(0.5)
        cpu0, t0 = cpu_seconds(s.proc.pid), time.time()
        time.sleep(3)
        busy = (cpu_seconds(s.proc.pid) - cpu0) / (time.time() - t0)
        grown = s.log_path.stat().st_size - log_before
        assert busy < 0.3, f"the server used {busy:.0%} of a core while out of descriptors"
        assert grown < 64 * 1024, f"the log grew {grown} bytes in 3 s"
        for c in conns:
            c.close()
        deadline = time.time() + 10
        while True:
            try:
                if requests.get(s.url + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.time() < deadline, "the server did not recover once descriptors were free"
            time.sleep(0.2)
    finally:
        s.stop()


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 512:
        pytest.skip(f"hard open-file limit {hard} leaves nothing to raise")
    s = Sluice(tmp_path / "data")
    s.preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    s.start()
    try:
        with open(f"/proc/{s.proc.pid}/limits") as f:
            line = next(l for l in f if l.startswith("Max open files"))
        want = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
        assert line.split()[3] == want, line
    finally:
        s.stop()


def test_an_oversized_kafka_batch_gets_message_too_large_and_is_not_retried(sluice):
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AdminClient, ConfigResource

    bootstrap = f"127.0.0.1:{sluice.kafka_port}"
    requests.post(f"{sluice.url}/v1/topics", json={"name": "big", "partitions": 1}, timeout=10).raise_for_status()
    assert requests.get(f"{sluice.url}/v1/topics/big", timeout=10).json()["max_message_bytes"] == 1048588

    def produce(size):
        p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 10_000_000, "retries": 5, "retry.backoff.ms": 100})
        out = []
        p.produce("big", b"x" * size, on_delivery=lambda err, msg: out.append(err))
        p.flush(30)
        return out

    t0 = time.time()
    errs = produce(2_000_000)
    assert len(errs) == 1 and errs[0] is not None and errs[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, errs
    assert time.time() - t0 < 10, "the producer gave up at once instead of retrying"
    assert stored(sluice, "big") == 0
    # The limit is the topic config max.message.bytes, shown and changed by Kafka's admin API.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, "big")
    configs = admin.describe_configs([res])[res].result()
    assert configs["max.message.bytes"].value == "1048588"
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    res = ConfigResource(ConfigResource.Type.TOPIC, "big", incremental_configs=[ConfigEntry("max.message.bytes", "4000000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result()
    assert produce(2_000_000) == [None]
    assert stored(sluice, "big") == 1
    # And over HTTP, where an out-of-range value is refused with the reason.
    r = requests.patch(f"{sluice.url}/v1/topics/big", json={"max_message_bytes": 0}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_config" and "max.message.bytes" in r.text, r.text
    r = requests.patch(f"{sluice.url}/v1/topics/big", json={"max_message_bytes": 100}, timeout=10)
    assert r.status_code == 200 and r.json()["max_message_bytes"] == 100
    assert produce(1000)[0].code() == KafkaError.MSG_SIZE_TOO_LARGE


def test_connection_caps_and_idle_websockets(tmp_path):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    s = Sluice(tmp_path / "data", env={"SLUICE_HTTP__MAX_CONNECTIONS": "4", "SLUICE_HTTP__WS_IDLE_TIMEOUT_MS": "1000"}).start()
    try:
        time.sleep(1.5)  # the start-up health checks' connections have closed
        ws = connect(f"ws://127.0.0.1:{s.port}/v1/topics/{TOPIC}/ws")
        ws.send(json.dumps(GOOD))
        assert json.loads(ws.recv(timeout=5))["accepted"] == 1
        held = slow_sockets(s.port, 3, b"")  # with the WebSocket: 4 open, the cap
        time.sleep(0.3)
        extra = slow_sockets(s.port, 1, b"")[0]
        time.sleep(0.3)
        assert closed(extra), "a connection over http.max_connections was kept"
        # The WebSocket counts until it closes: silent for 1 s, it is closed with 1001.
        with pytest.raises(ConnectionClosed) as closed_ws:
            ws.recv(timeout=5)
        assert closed_ws.value.rcvd is not None and closed_ws.value.rcvd.code == 1001, closed_ws.value
        for c in held:
            c.close()
        time.sleep(0.3)
        assert requests.get(s.url + "/healthz", timeout=5).status_code == 200
    finally:
        s.stop()


def test_websocket_and_sse_caps(tmp_path):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    s = Sluice(tmp_path / "data", env={"SLUICE_HTTP__MAX_WEBSOCKETS": "1", "SLUICE_HTTP__MAX_SSE_SUBSCRIBERS": "2"}).start()
    try:
        ws_url = f"ws://127.0.0.1:{s.port}/v1/topics/{TOPIC}/ws"
        first = connect(ws_url)
        assert metric(s, "sluice_http_open_streams", kind="websocket") == 1
        assert metric(s, "sluice_http_max_streams", kind="websocket") == 1
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url)
        assert refused.value.response.status_code == 503 and refused.value.response.headers["Retry-After"] == "5"
        first.close()
        time.sleep(0.2)
        connect(ws_url).close()  # the slot was given back

        streams = [requests.get(s.url + path, stream=True, timeout=10) for path in ["/v1/sessions/stream", "/v1/pipelines/heart_rate/stream"]]
        assert all(r.status_code == 200 for r in streams)
        assert metric(s, "sluice_http_open_streams", kind="sse") == 2
        r = requests.get(s.url + "/v1/sessions/stream", stream=True, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "too_many_streams", r.text
        assert requests.get(s.url + "/v1/sessions", timeout=10).status_code == 200, "other routes are not capped"
        streams[0].close()
        t0 = deadline = time.time()
        deadline += 30
        while True:  # the server notices the closed stream at its next read or write
            r = requests.get(s.url + "/v1/sessions/stream", stream=True, timeout=10)
            if r.status_code == 200:
                r.close()
                print(f"SSE slot given back {time.time() - t0:.1f} s after the client closed")
                break
            assert time.time() < deadline, "the SSE slot was not given back"
            time.sleep(0.5)
    finally:
        s.stop()


def metric(s, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in requests.get(f"{s.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name) and want in line:
            return float(line.split()[-1])
    return 0.0


def test_http_ingest_request_quota(tmp_path):
    s = Sluice(tmp_path / "data", env={"SLUICE_HTTP__INGEST_REQUESTS_PER_SECOND": "5"}).start()
    try:
        url = f"{s.url}/v1/topics/{TOPIC}/records"
        t0 = time.time()
        codes = [requests.post(url, json=GOOD, timeout=10) for _ in range(12)]
        took = time.time() - t0
        ok = [r for r in codes if r.status_code == 200]
        limited = [r for r in codes if r.status_code == 429]
        # A burst of 5, then 5 more per second while the 12 requests were being sent.
        assert 5 <= len(ok) <= 5 + int(took * 5) + 1 and len(ok) + len(limited) == 12, ([r.status_code for r in codes], took)
        assert limited, "some requests were over the quota"
        assert limited[0].json()["error"]["code"] == "rate_limited" and int(limited[0].headers["Retry-After"]) >= 1
        assert stored(s) == len(ok), "refused requests stored nothing"
        assert requests.get(f"{s.url}/v1/topics", timeout=10).status_code == 200, "reads are not counted"
        time.sleep(1.2)
        assert requests.post(url, json=GOOD, timeout=10).status_code == 200, "the bucket refills"
    finally:
        s.stop()


def test_kafka_byte_rate_quotas_throttle_producers_and_consumers(tmp_path):
    from confluent_kafka import Consumer, Producer

    rate = 200_000
    s = Sluice(tmp_path / "data", env={"SLUICE_KAFKA__PRODUCER_BYTE_RATE": str(rate), "SLUICE_KAFKA__CONSUMER_BYTE_RATE": str(rate)}).start()
    try:
        requests.post(f"{s.url}/v1/topics", json={"name": "q", "partitions": 1}, timeout=10).raise_for_status()
        bootstrap = f"127.0.0.1:{s.kafka_port}"
        total = 1_000_000
        p = Producer({"bootstrap.servers": bootstrap, "client.id": "fast-producer", "linger.ms": 5, "batch.size": 64_000})
        t0 = time.time()
        for i in range(total // 1000):
            p.produce("q", b"x" * 1000)
            p.poll(0)
        assert p.flush(60) == 0
        took = time.time() - t0
        # One second of burst, then 200 KB/s: at least about 4 s for 1 MB.
        assert took >= 2.5, f"1 MB produced in {took:.1f} s under a {rate} B/s quota"
        assert stored(s, "q") == total // 1000, "throttled, not dropped"
        assert metric(s, "sluice_quota_throttle_seconds_sum", quota="produce") > 0

        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "g", "client.id": "fast-consumer", "auto.offset.reset": "earliest",
                      "fetch.max.bytes": 100_000, "message.max.bytes": 100_000, "max.partition.fetch.bytes": 100_000})
        c.subscribe(["q"])
        got, t0 = 0, time.time()
        while got < total // 1000 and time.time() - t0 < 60:
            got += sum(1 for m in c.consume(500, timeout=1) if m.error() is None)
        took = time.time() - t0
        c.close()
        assert got == total // 1000
        assert took >= 2.5, f"1 MB fetched in {took:.1f} s under a {rate} B/s quota"
        assert metric(s, "sluice_quota_throttle_seconds_sum", quota="fetch") > 0
    finally:
        s.stop()


def test_closed_sessions_are_paged_and_only_the_newest_held(tmp_path):
    import reference

    s = Sluice(tmp_path / "data", env={"SLUICE_HTTP__SESSIONS_IN_MEMORY": "3", "SLUICE_STREAM__IDLE_TIMEOUT_MS": "0"}).start()
    try:
        t0 = 1_700_000_000_000
        # 4 players x 2 sessions each (a 10-minute gap splits them): 8 closed sessions.
        lines = [json.dumps(reference.event(f"p{p}", t0 + (off + t) * 1000 + p * 7000, 120)) for p in range(4) for off in (0, 1200) for t in range(5)]
        r = requests.post(f"{s.url}/v1/topics/{TOPIC}/records", data="\n".join(lines), headers={"Content-Type": "application/x-ndjson"}, timeout=10)
        assert r.status_code == 200 and r.json()["accepted"] == 40, r.text
        s.drain()

        def walk(**params):
            got, before = [], None
            while True:
                q = dict(params, **({"before": before} if before else {}))
                page = requests.get(f"{s.url}/v1/sessions", params=q, timeout=10).json()
                got += [(x["player_id"], x["session_start"]) for x in page["closed"]]
                before = page["next"]
                if before is None:
                    return got

        everything = walk(limit=100)
        assert len(everything) == 8
        ends = [x["session_end"] for x in requests.get(f"{s.url}/v1/sessions", params={"limit": 100}, timeout=10).json()["closed"]]
        assert ends == sorted(ends, reverse=True), "newest first"
        assert walk(limit=2) == everything, "pages of 2 walk the same list (past the 3 held in memory)"
        assert walk(limit=1, player="p2") == [x for x in everything if x[0] == "p2"]
        bad = requests.get(f"{s.url}/v1/sessions", params={"before": "nonsense"}, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"
        s.stop()
        s.start()  # the newest come back from the lake; older pages still read it
        assert walk(limit=2) == everything
    finally:
        s.stop()


def test_stalled_large_bodies_do_not_starve_small_requests(tmp_path):
    s = Sluice(tmp_path / "data", env={"SLUICE_HTTP__MAX_INFLIGHT_BODY_BYTES": "0"}).start()  # raised to 4 MiB + 16 MiB
    try:
        bound = metric(s, "sluice_listener_max_inflight_request_bytes", listener="http")
        assert bound == 4194304 + 16 * 1024 * 1024
        head = f"POST /v1/topics/{TOPIC}/records HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 4000000\r\n\r\n".encode()
        stalled = slow_sockets(s.port, 12, head)
        for c in stalled:
            c.setblocking(False)
            try:
                c.send(b"[" + b" " * 3_000_000)  # 3 MB of 4, then nothing more
            except BlockingIOError:
                pass
        time.sleep(1)
        held = metric(s, "sluice_listener_inflight_request_bytes", listener="http")
        assert 0 < held <= bound, held
        t0 = time.time()
        r = requests.post(f"{s.url}/v1/topics/{TOPIC}/records", json=GOOD, timeout=10)
        assert r.status_code == 200 and time.time() - t0 < 2, (r.status_code, time.time() - t0)
        for c in stalled:
            c.close()
    finally:
        s.stop()


def test_a_websocket_that_never_reads_its_acks_is_dropped(tmp_path):
    from websockets.sync.client import connect

    s = Sluice(tmp_path / "data", env={"SLUICE_HTTP__WS_IDLE_TIMEOUT_MS": "2000"}).start()
    try:
        ws = connect(f"ws://127.0.0.1:{s.port}/v1/topics/{TOPIC}/ws", max_queue=1)
        sent = [0]

        def flood():
            frame = json.dumps(GOOD)
            try:
                while sent[0] < 200_000:
                    ws.send(frame)
                    sent[0] += 1
            except Exception:
                pass

        t = threading.Thread(target=flood, daemon=True)
        t.start()
        rss = []
        deadline = time.time() + 20
        while time.time() < deadline and metric(s, "sluice_http_open_streams", kind="websocket") != 0:
            rss.append(rss_kb(s.proc.pid))
            time.sleep(0.5)
        assert metric(s, "sluice_http_open_streams", kind="websocket") == 0, "the flooding WebSocket was not dropped"
        assert max(rss) < 300 * 1024, f"peak RSS {max(rss)} KB"
        assert sent[0] < 200_000, "the server stopped reading (backpressure) instead of queueing"
        assert requests.post(f"{s.url}/v1/topics/{TOPIC}/records", json=GOOD, timeout=10).status_code == 200
        ws.close()
    finally:
        s.stop()


def test_a_non_loopback_listener_needs_insecure(tmp_path):
    import subprocess

    from conftest import BIN, free_port

    port = free_port()
    args = [str(BIN), "serve", "--data-dir", str(tmp_path / "d"), "--http-addr", f"0.0.0.0:{port}", "--kafka-addr", f"127.0.0.1:{free_port()}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "http.addr" in r.stderr and "not a loopback address" in r.stderr and "--insecure" in r.stderr, r.stderr
    assert not (tmp_path / "d").exists(), "nothing was created before refusing"
    # With --insecure it serves on every address (reached here through loopback).
    proc = subprocess.Popen(args + ["--insecure"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.time() < deadline, "sluice --insecure did not start"
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
