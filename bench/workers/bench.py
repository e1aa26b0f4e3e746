"""The heart-rate pipelines (heart_rate and heartbeat_raw) with 1, 2 and 3 `sluice worker`s
beside one `sluice serve`, on the same input, on this machine.

The input is loaded first: PLAYERS players x SECONDS readings into a 12-partition topic of
a cluster (`sluice serve`, its pipelines off), and the same into the single process's
embedded log (pipelines off). Then each run starts the processing from nothing and times
it until every record is processed and committed:
- single process: `sluice serve` restarted with its pipelines on; done when its drains of
  both pipelines return;
- N workers (fresh group, lake and state folders): done when the group's committed offsets
  reach the end of every partition (a task commits its offset after its checkpoint), and
  both pipelines are drained on every worker.
Prints input records/s for each, with the peak RSS of the processing processes.

Usage (from the repository root, after `cargo build --release`):
    .venv/bin/python bench/workers/bench.py            # PLAYERS=1000 SECONDS=300
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("SLUICE", str(ROOT / "target" / "release" / "sluice"))
PLAYERS = int(os.environ.get("PLAYERS", "1000"))
# Seconds of readings in the cluster (the workers' input) and in the single process's log.
SECONDS = int(os.environ.get("SECONDS", "10000"))
SINGLE_SECONDS = int(os.environ.get("SINGLE_SECONDS", "2000"))
PARTITIONS = 12
TOPIC = "heartbeat-raw-topic"
T0 = 1_764_000_000_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"a sluice process exited with {proc.returncode}")
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    sys.exit(f"{url} did not start")


def peak_rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Proc:
    def __init__(self, args, env, log):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([BIN, *args, "--http-addr", f"127.0.0.1:{self.port}"], env={**os.environ, **env},
                                     stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        wait_healthy(self.url, self.proc)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=120)


def load(url, seconds):
    for s in range(seconds):
        body = [{"playerId": f"p{i:05}", "heartbeat": 60 + (i * 7 + s * 3) % 130, "createdAt": T0 + s * 1000} for i in range(PLAYERS)]
        r = requests.post(f"{url}/v1/topics/{TOPIC}/records", json=body, timeout=60)
        r.raise_for_status()


def drain(url):
    for p in ("heart_rate", "heartbeat_raw"):
        while True:
            r = requests.post(f"{url}/v1/pipelines/{p}/drain", timeout=600)
            if r.status_code != 409:
                r.raise_for_status()
                break
            time.sleep(0.2)


def main():
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-workers-"))
    cfg = work / "sluice.toml"
    cfg.write_text(f'[[topics]]\nname = "{TOPIC}"\npartitions = {PARTITIONS}\nschema = "heartbeat"\n')
    off = {"SLUICE_STREAM__ENABLED": "false", "SLUICE_KAFKA__GROUP_INITIAL_REBALANCE_DELAY_MS": "0"}
    kafka_port = free_port()
    cluster = Proc(["serve", "--config", str(cfg), "--data-dir", str(work / "cluster"), "--kafka-addr", f"127.0.0.1:{kafka_port}"], off, work / "cluster.log")
    single_dir = work / "single"
    single = Proc(["serve", "--config", str(cfg), "--data-dir", str(single_dir), "--kafka-addr", f"127.0.0.1:{free_port()}"], off, work / "single.log")
    t = time.time()
    load(cluster.url, SECONDS)
    load(single.url, SINGLE_SECONDS)
    records, single_records = PLAYERS * SECONDS, PLAYERS * SINGLE_SECONDS
    print(f"loaded {records} readings into the cluster and {single_records} into the single process in {time.time() - t:.1f} s")
    single.stop()

    results = []
    t = time.time()
    single = Proc(["serve", "--config", str(cfg), "--data-dir", str(single_dir), "--kafka-addr", f"127.0.0.1:{free_port()}"], {}, work / "single.log")
    drain(single.url)
    elapsed = time.time() - t
    results.append(("single process (sluice serve)", single_records, elapsed, None, [peak_rss_mb(single.proc.pid)]))
    single.stop()

    for n in [int(x) for x in os.environ.get("WORKERS", "1,2,3").split(",")]:
        group = f"bench-{n}"
        lake, state = work / f"lake-{n}", work / f"state-{n}"
        t = time.time()
        ws = [Proc(["worker", "--config", str(cfg), "--data-dir", str(work / f"w{n}-{i}"), "--kafka-bootstrap", f"127.0.0.1:{kafka_port}",
                    "--lake", str(lake), "--state", str(state), "--group", group, "--name", f"w{i}"], {}, work / f"w{n}-{i}.log") for i in range(n)]
        # Running once every partition has a task; done when the group's committed offsets
        # reach every partition's end.
        running = None
        progress = []  # (s, records committed by the group)
        while True:
            if running is None:
                try:
                    if sum(len(requests.get(w.url + "/v1/status", timeout=5).json()["partitions"]) for w in ws) == PARTITIONS:
                        running = time.time() - t
                except requests.RequestException:
                    pass
            g = requests.get(f"{cluster.url}/v1/groups/{group}", timeout=10)
            if g.status_code == 200:
                offs = [o for o in g.json()["offsets"] if o["topic"] == TOPIC]
                progress.append((time.time() - t, sum(o["offset"] for o in offs)))
                if len(offs) == PARTITIONS and all(o["lag"] == 0 for o in offs):
                    break
            time.sleep(0.1)
        elapsed = time.time() - t
        rss = [peak_rss_mb(w.proc.pid) for w in ws]
        for w in ws:
            w.stop()
        # Steady state: from 20 % to 80 % of the input committed.
        a = next(p for p in progress if p[1] >= 0.2 * records)
        b = next(p for p in progress if p[1] >= 0.8 * records)
        steady = (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else None
        results.append((f"{n} worker{'s' if n > 1 else ''} (all running at {running or elapsed:.1f} s)", records, elapsed, steady, rss))
    cluster.stop()
    print(f"\n{PLAYERS} players, {PARTITIONS} partitions, both pipelines; {os.cpu_count()} cores")
    print("s: from the start of the processes to every record processed and committed;")
    print("steady: records/s while the group's committed offsets went from 20 % to 80 % of the input")
    print(f"{'run':42} {'records':>9} {'s':>7} {'records/s':>10} {'steady':>10}  peak RSS per process (MB)")
    for name, n, s, steady, rss in results:
        st = f"{steady:10.0f}" if steady else f"{'-':>10}"
        print(f"{name:42} {n:9d} {s:7.1f} {n / s:10.0f} {st}  {', '.join(f'{r:.0f}' for r in rss)}")
    if os.environ.get("KEEP"):
        print(f"logs in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
