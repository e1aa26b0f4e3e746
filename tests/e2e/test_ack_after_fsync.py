"""Acks come only after fsync, checked on the system calls themselves: the server runs under
strace, a client sends requests one at a time, and before each ack (the HTTP response or
the WebSocket ack frame) every log write since the previous ack has been fdatasync'd.
The log is the only writer that uses pwrite64 (segment appends); fdatasync is its sync."""
import json
import os
import re
import signal
import shutil
import subprocess
import time

import requests
from websockets.sync.client import connect

from conftest import BIN, TOPIC, free_port

LINE = re.compile(r"^(\d+)\s+(\w+)\((\d+),?(.*)$")


def test_every_ack_follows_the_fsync_of_its_writes(tmp_path):
    strace = shutil.which("strace")
    assert strace, "strace is installed by scripts/test.sh"
    port = free_port()
    trace = tmp_path / "trace.txt"
    proc = subprocess.Popen(
        [strace, "-f", "-qq", "-s", "48", "-e", "trace=pwrite64,fdatasync,write,writev,sendto", "-e", "signal=none", "-o", str(trace),
         str(BIN), "serve", "--data-dir", str(tmp_path / "data"), "--http-addr", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "SLUICE_KAFKA__ADDR": f"127.0.0.1:{free_port()}"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.time() < deadline, "server did not start under strace"
            time.sleep(0.1)
        for i in range(5):
            body = [{"playerId": f"p{i}", "heartbeat": 100 + i, "createdAt": 1_700_000_000_000 + i},
                    {"playerId": f"p{i}", "heartbeat": 999, "createdAt": 1_700_000_000_000 + i}]  # one to the dead-letter topic
            r = requests.post(f"{url}/v1/topics/{TOPIC}/records", json=body, timeout=10)
            assert r.status_code == 200 and r.json()["accepted"] == 1
        with connect(f"ws://127.0.0.1:{port}/v1/topics/{TOPIC}/ws") as ws:
            for i in range(5):
                ws.send(json.dumps({"playerId": f"w{i}", "heartbeat": 90, "createdAt": 1_700_000_001_000 + i}))
                assert json.loads(ws.recv(timeout=10))["accepted"] == 1
    finally:
        # Stop sluice itself (strace exits with it); strace would only detach on SIGTERM.
        children = (open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
                    if proc.poll() is None else [])
        for pid in children:
            os.kill(int(pid), signal.SIGTERM)
        proc.wait(timeout=30)

    acks, unsynced, writes_seen = 0, {}, 0
    for line in trace.read_text().splitlines():
        m = LINE.match(line)
        if not m:
            continue
        _pid, call, fd, rest = m.groups()
        if call == "pwrite64":
            unsynced[fd] = line
            writes_seen += 1
        elif call == "fdatasync":
            unsynced.pop(fd, None)
        elif call in ("write", "writev", "sendto") and ("HTTP/1.1 200" in rest or "accepted" in rest):
            assert not unsynced, f"ack sent before fsync of: {list(unsynced.values())}\nack: {line}"
            acks += 1
    assert acks >= 10, f"saw {acks} acks in the trace (10 acks, plus the 200s of the startup health checks)"
    assert writes_seen >= 15, "5 HTTP requests write a batch and a dead letter each, 5 frames one batch each"
