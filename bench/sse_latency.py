"""Ingest ack → SSE delivery of the updated aggregate, under background load.

A probe player sends one reading every --probe-ms over HTTP and notes when each is
acknowledged (after fsync). A listener on /v1/sessions/stream (the dashboard's stream)
notes when the probe's open session first shows that many readings. The difference is
the latency a dashboard sees. Meanwhile --rate readings/s from --players other players
go in as NDJSON batches. Prints p50/p99/max latency, the load achieved, and the server's
RSS. Run against a started server:

    ./target/release/sluice serve --data-dir /tmp/lat &
    .venv/bin/python bench/sse_latency.py --rate 10000 --seconds 30
"""
import argparse
import json
import socket
import statistics
import threading
import time
from urllib.parse import urlparse

import requests

TOPIC = "heartbeat-raw-topic"


def load(url, rate, players, seconds, start_ms, stop, sent):
    """`rate` readings/s as 100 NDJSON batches a second; player i's readings are 1 s apart in
    event time, so each player sends rate/players readings per wall second."""
    s = requests.Session()
    per_tick = max(1, rate // 100)
    t0 = time.monotonic()
    n = 0
    tick = 0
    while not stop.is_set() and time.monotonic() - t0 < seconds:
        lines = []
        for _ in range(per_tick):
            p = n % players
            k = n // players
            lines.append(f'{{"playerId":"load-{p}","heartbeat":{90 + (n * 7) % 90},"createdAt":{start_ms + k * 1000}}}')
            n += 1
        r = s.post(f"{url}/v1/topics/{TOPIC}/records", data="\n".join(lines), headers={"Content-Type": "application/x-ndjson"}, timeout=60)
        if r.status_code == 200:
            sent[0] += per_tick
        tick += 1
        wait = t0 + tick / 100 - time.monotonic()
        if wait > 0:
            time.sleep(wait)


def listen(url, probe, seen, stop, ready):
    """Reads the sessions stream; records when the probe's open session first has n readings."""
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port))
    sock.sendall(f"GET /v1/sessions/stream HTTP/1.1\r\nHost: {u.hostname}\r\nAccept: text/event-stream\r\n\r\n".encode())
    f = sock.makefile("rb")
    while f.readline() not in (b"\r\n", b""):
        pass
    ready.set()
    event = None
    sock.settimeout(1.0)
    while not stop.is_set():
        try:
            line = f.readline()
        except (socket.timeout, OSError):
            continue
        if not line:
            break
        text = line.decode(errors="replace").strip()
        if text.startswith("event:"):
            event = text[6:].strip()
        elif text.startswith("data:") and event == "session_update":
            d = json.loads(text[5:])
            if d["player_id"] == probe and d["open"]:
                n = d["open"][-1]["samples"]
                now = time.monotonic()
                for i in range(1, n + 1):
                    seen.setdefault(i, now)
    sock.close()


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--rate", type=int, default=10000, help="background readings/s")
    ap.add_argument("--players", type=int, default=1000, help="background players")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--probe-ms", type=int, default=100, help="one probe reading this often, ms")
    ap.add_argument("--pid", type=int, help="the server's pid, for its RSS")
    a = ap.parse_args()
    probe = f"probe-{int(time.time())}"
    start_ms = int(time.time() * 1000) // 60000 * 60000 - 3_600_000
    stop = threading.Event()
    ready = threading.Event()
    seen = {}
    listener = threading.Thread(target=listen, args=(a.url, probe, seen, stop, ready), daemon=True)
    listener.start()
    ready.wait(10)
    sent = [0]
    loader = threading.Thread(target=load, args=(a.url, a.rate, a.players, a.seconds, start_ms, stop, sent), daemon=True)
    if a.rate > 0:
        loader.start()
    acked = {}
    s = requests.Session()
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < a.seconds:
        n += 1
        body = {"playerId": probe, "heartbeat": 120, "createdAt": start_ms + n * 1000}
        r = s.post(f"{a.url}/v1/topics/{TOPIC}/records", json=body, timeout=30)
        acked[n] = time.monotonic()
        assert r.status_code == 200, r.text
        wait = t0 + n * a.probe_ms / 1000 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    elapsed = time.monotonic() - t0
    time.sleep(2)
    stop.set()
    lat = sorted((seen[i] - acked[i]) * 1000 for i in acked if i in seen)
    missing = len(acked) - len(lat)
    if not lat:
        raise SystemExit("no probe reading reached the stream")
    q = lambda p: lat[min(len(lat) - 1, int(round(p * (len(lat) - 1))))]
    print(f"load {sent[0] / elapsed:,.0f} readings/s from {a.players} players (target {a.rate:,}); "
          f"{len(lat)} probe readings, {missing} not seen")
    print(f"ack -> SSE session_update: p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, max {lat[-1]:.1f} ms, mean {statistics.mean(lat):.1f} ms")
    if a.pid:
        print(f"server RSS {rss_mb(a.pid):.0f} MB")


if __name__ == "__main__":
    main()
