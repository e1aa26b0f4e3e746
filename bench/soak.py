"""Soak: sustained load through the pipelines with many SSE subscribers and open
dashboard pages, watching whether the server's RSS or the browser's JS heap grows.

Run by hand against a started server (see docs/benchmarks.md for the figures):

    ./target/release/sluice serve --data-dir /tmp/soak &
    .venv/bin/python bench/soak.py --pid $! --minutes 30 --rate 100000

- Load and latency: `sluice bench sse-latency` (Rust) sends --rate readings/s from
  --players players and measures ingest ack -> SSE delivery for a probe player meanwhile.
- Subscribers: --subscribers SSE streams, a mix of what dashboards open: a player's
  sessions (`/v1/sessions/stream?player=`), a player's readings
  (`/v1/players/{id}/readings`), the status events (`/v1/events`) and the heart-rate
  pipeline's results (`/v1/pipelines/heart_rate/stream`). Each counts its events and
  resyncs.
- Browser: Debian's Chromium (Playwright) keeps the overview and a player page open; the
  JS heap (after a forced GC) is read at the start and the end.
- Server RSS is sampled every --sample-s seconds.
"""
import argparse
import os
import socket
import subprocess
import threading
import time
from urllib.parse import urlparse

from sse_latency import rss_mb

CHROMIUM = "/usr/bin/chromium"


class Subscriber(threading.Thread):
    """Reads one SSE stream with blocking reads (a socket file object cannot be read
    again after a timeout); close() ends it."""

    def __init__(self, url, path, kind):
        super().__init__(daemon=True)
        self.url, self.path, self.kind = urlparse(url), path, kind
        self.events = self.resyncs = self.bytes = 0
        self.error = None
        self.closing = False
        self.sock = None
        self.start()

    def run(self):
        try:
            self.sock = socket.create_connection((self.url.hostname, self.url.port), timeout=5)
            self.sock.settimeout(None)
            self.sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: {self.url.hostname}\r\nAccept: text/event-stream\r\n\r\n".encode())
            f = self.sock.makefile("rb")
            status = f.readline()
            if b" 200 " not in status:
                raise RuntimeError(status.decode(errors="replace").strip())
            while True:
                line = f.readline()
                if not line:
                    raise RuntimeError("stream ended")
                self.bytes += len(line)
                if line.startswith(b"event:"):
                    self.events += 1
                    if b"resync" in line:
                        self.resyncs += 1
        except Exception as e:  # noqa: BLE001 - reported at the end
            if not self.closing:
                self.error = f"{self.path}: {e}"

    def close(self):
        self.closing = True
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def js_heap_mb(page, cdp):
    cdp.send("HeapProfiler.collectGarbage")
    used = cdp.send("Runtime.getHeapUsage")["usedSize"]
    return used / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--pid", type=int, required=True, help="the server's pid (RSS)")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--players", type=int, default=10_000)
    ap.add_argument("--subscribers", type=int, default=200)
    ap.add_argument("--readings", type=int, default=4, help="of the subscribers, player readings streams")
    ap.add_argument("--sample-s", type=float, default=60)
    ap.add_argument("--sluice", default="target/release/sluice")
    a = ap.parse_args()
    seconds = int(a.minutes * 60)
    paths = []
    # Player streams follow players of the load (`load-<run>-<i>`). A readings stream scans
    # its player's partition, so only --readings of them.
    run = f"soak{int(time.time())}"
    for i in range(a.subscribers):
        player = f"load-{run}-{i * 37 % a.players}"
        if i < a.readings:
            paths.append(("readings", f"/v1/players/{player}/readings"))
        else:
            paths.append([("player sessions", f"/v1/sessions/stream?player={player}"), ("player sessions", f"/v1/sessions/stream?player={player}"),
                          ("events", "/v1/events"), ("pipeline", "/v1/pipelines/heart_rate/stream")][i % 4])
    subs = [Subscriber(a.url, p, k) for k, p in paths]
    gen = subprocess.Popen([a.sluice, "bench", "sse-latency", "--url", a.url, "--rate", str(a.rate), "--players", str(a.players),
                            "--seconds", str(seconds), "--pid", str(a.pid), "--run", run], stdout=subprocess.PIPE, text=True)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"])
        pages = []
        for path in ("/", f"/players/load-{run}-1"):
            page = browser.new_page()
            page.goto(a.url + path)
            pages.append((path, page, page.context.new_cdp_session(page)))
        time.sleep(min(60, seconds / 4))  # warm up: the load reaches its rate, pages fill
        heap0 = {p: js_heap_mb(pg, cdp) for p, pg, cdp in pages}
        rss = [(0, rss_mb(a.pid))]
        t0 = time.monotonic()
        print(f"t=0 s: server RSS {rss[0][1]:.0f} MB; JS heap " + ", ".join(f"{p} {v:.1f} MB" for p, v in heap0.items()), flush=True)
        while gen.poll() is None:
            time.sleep(a.sample_s)
            rss.append((time.monotonic() - t0, rss_mb(a.pid)))
            alive = sum(1 for s in subs if s.error is None)
            print(f"t={rss[-1][0]:.0f} s: server RSS {rss[-1][1]:.0f} MB, {alive}/{len(subs)} subscribers connected, "
                  f"{sum(s.events for s in subs):,} events, {sum(s.resyncs for s in subs)} resyncs", flush=True)
        heap1 = {p: js_heap_mb(pg, cdp) for p, pg, cdp in pages}
        texts = {p: pg.inner_text("#status") for p, pg, _ in pages}
        browser.close()
    for sub in subs:
        sub.close()
    print(gen.stdout.read())
    errors = [s.error for s in subs if s.error]
    by_kind = {}
    for s in subs:
        k = s.kind
        e, n, r = by_kind.get(k, (0, 0, 0))
        by_kind[k] = (e + s.events, n + 1, r + s.resyncs)
    print("subscribers:", ", ".join(f"{k}: {n} streams, {e:,} events, {r} resyncs" for k, (e, n, r) in by_kind.items()))
    print(f"server RSS: start {rss[0][1]:.0f} MB, end {rss[-1][1]:.0f} MB, max {max(r for _, r in rss):.0f} MB")
    print("JS heap after GC: " + ", ".join(f"{p}: {heap0[p]:.1f} -> {heap1[p]:.1f} MB (status {texts[p]!r})" for p in heap0))
    if errors:
        print(f"{len(errors)} subscribers failed, e.g. {errors[:3]}")


if __name__ == "__main__":
    main()
