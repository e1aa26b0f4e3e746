"""One server holds 1,000 concurrent Server-Sent Events subscribers, each with its own
filter, and every one gets the events its filter selects (and no other); the server's
memory stays bounded. Raw HTTP/1.1 over asyncio, one socket per subscriber."""
import asyncio
import json
import resource

import requests

from conftest import TOPIC, Sluice

N = 1000
BASE = 1_700_000_040_000


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


async def subscriber(port, query, want, ready, done, timeout=60):
    """Reads SSE from /v1/events?query until an event named `want` arrives; returns the
    event names received."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /v1/events?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    status = await reader.readline()
    assert b" 200 " in status, status
    while (await reader.readline()) not in (b"\r\n", b""):
        pass  # headers
    ready.release()
    names = []
    try:
        async with asyncio.timeout(timeout):
            while want not in names:
                line = await reader.readline()
                if not line:
                    break
                # Chunked transfer: size lines and payload lines interleave; pick the fields.
                text = line.decode(errors="replace").strip()
                if text.startswith("event:"):
                    names.append(text[6:].strip())
                elif text.startswith("data:"):
                    names[-1:] = [names[-1] + "|" + json.loads(text[5:])["kind"]] if names else []
    finally:
        writer.close()
        done.release()
    return names


async def run(s):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * N)), hard))
    # Each subscriber has its own filter: by pipeline, by kind, or both.
    filters = []
    for i in range(N):
        if i % 3 == 0:
            filters.append(("pipeline=heart_rate", "checkpoint_completed"))
        elif i % 3 == 1:
            filters.append(("kind=pipeline_state&pipeline=heart_rate", "pipeline_state"))
        else:
            filters.append(("kind=checkpoint_completed", "checkpoint_completed"))
    ready, done = asyncio.Semaphore(0), asyncio.Semaphore(0)
    tasks = [asyncio.create_task(subscriber(s.port, q, w, ready, done)) for q, w in filters]
    for _ in range(N):
        async with asyncio.timeout(60):
            await ready.acquire()
    open_streams = next(float(line.split()[-1]) for line in requests.get(f"{s.url}/metrics", timeout=10).text.splitlines()
                        if line.startswith('sluice_http_open_streams{kind="sse"}'))
    assert open_streams >= N, open_streams
    rss_before = rss_kb(s.proc.pid)
    # One drain makes heart_rate go running → draining → running and commit a checkpoint.
    r = requests.post(f"{s.url}/v1/topics/{TOPIC}/records", json=[{"playerId": "a", "heartbeat": 100, "createdAt": BASE + i * 1000} for i in range(30)], timeout=30)
    assert r.status_code == 200
    s.drain()
    results = await asyncio.gather(*tasks)
    return filters, results, rss_before, rss_kb(s.proc.pid)


def test_a_thousand_filtered_sse_subscribers(tmp_path):
    s = Sluice(tmp_path / "data").start()
    try:
        filters, results, rss_before, rss_after = asyncio.run(run(s))
        for (query, want), names in zip(filters, results):
            assert want in [n.split("|")[0] for n in names], (query, names)
            kinds = {n.split("|")[1] for n in names if "|" in n}
            if query.startswith("kind="):
                assert kinds <= {query.split("&")[0][5:]}, (query, names)
        # 1,000 open streams cost little memory (a bounded broadcast and a socket each).
        assert rss_after - rss_before < 64 * 1024, (rss_before, rss_after)
        print(f"1000 SSE subscribers: server RSS {rss_before / 1024:.0f} MiB before the events, {rss_after / 1024:.0f} MiB after")
    finally:
        s.stop()
