"""Many devices, each on its own WebSocket, sending one heart-rate reading a second to a
running sluice (the seeds' model). Prints the server's resident memory (idle, with every
device connected, peak), the ack latency of the readings, and how many were acked.

    python bench/devices.py --url ws://127.0.0.1:8080 --pid $(pgrep -f 'sluice serve') \\
        --devices 10000 --seconds 30

Needs `websockets` (tests/e2e/requirements.txt) and an open-file limit above the device
count (`ulimit -n`; sluice raises its own to the hard limit).
"""
import argparse
import asyncio
import json
import resource
import time

import websockets


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))


async def device(url, i, seconds, t_start, latencies, stop, connected):
    async with websockets.connect(url, compression=None, max_size=None, open_timeout=60) as ws:
        connected.append(i)
        await stop.wait()  # every device connected first
        offset = (i % 1000) / 1000  # spread the devices over each second
        for k in range(seconds):
            due = t_start[0] + k + offset
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            sent = time.monotonic()
            await ws.send(json.dumps({"playerId": f"dev-{i}", "heartbeat": 60 + (i + k) % 120, "createdAt": int(time.time() * 1000)}))
            ack = json.loads(await ws.recv())
            if ack.get("accepted") == 1:
                latencies.append(time.monotonic() - sent)


async def main(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    url = f"{args.url}/v1/topics/{args.topic}/ws"
    idle_kb = status_kb(args.pid, "VmRSS")
    latencies, stop, t_start, connected = [], asyncio.Event(), [0.0], []
    tasks = []
    for start in range(0, args.devices, 500):
        tasks += [asyncio.create_task(device(url, i, args.seconds, t_start, latencies, stop, connected)) for i in range(start, min(args.devices, start + 500))]
        await asyncio.sleep(0.05)
    deadline = time.monotonic() + 120
    while len(connected) + sum(t.done() for t in tasks) < args.devices and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)
    connected_kb = status_kb(args.pid, "VmRSS")
    t_start[0] = time.monotonic() + 0.5
    stop.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [r for r in results if isinstance(r, Exception)]
    peak_kb = status_kb(args.pid, "VmHWM")
    lat = sorted(latencies)
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
    want = args.devices * args.seconds
    print(f"devices {args.devices}, {args.seconds} s at 1 reading/s each: {len(lat)}/{want} readings acked, {len(failed)} devices failed")
    print(f"ack latency p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms")
    print(f"server RSS: {idle_kb / 1024:.0f} MB idle, {connected_kb / 1024:.0f} MB with every device connected "
          f"({(connected_kb - idle_kb) / args.devices:.1f} KB each), peak {peak_kb / 1024:.0f} MB")
    if failed:
        print("first failure:", repr(failed[0]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="ws://127.0.0.1:8080")
    ap.add_argument("--topic", default="heartbeat-raw-topic")
    ap.add_argument("--pid", type=int, required=True, help="the sluice process, whose memory is read from /proc")
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--seconds", type=int, default=30)
    asyncio.run(main(ap.parse_args()))
