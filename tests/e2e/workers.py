"""Helpers for the `sluice worker` tests: a cluster (`sluice serve` with its Kafka listener,
pipelines off), workers in one consumer group, a reference (`sluice serve` running the
same pipelines over the same input in one process), and table comparison."""
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import requests

from conftest import BIN, TOPIC, Sluice, free_port, lake_table

T0 = 1_764_000_000_000
# Two sessions per player: 60 s of readings, a gap longer than the 300 s session gap, 60 s more.
SECONDS = list(range(0, 60)) + list(range(460, 520))


def config(path, partitions, session_timeout_ms=6000):
    path.write_text(f"""
[[topics]]
name = "{TOPIC}"
partitions = {partitions}
schema = "heartbeat"

[cluster.properties]
"session.timeout.ms" = "{session_timeout_ms}"
"heartbeat.interval.ms" = "500"
""")
    return path


def second(players, s):
    """One reading per player at second `s` (every zone occurs)."""
    return [{"playerId": f"p{i:04}", "heartbeat": 60 + (i * 7 + s * 3) % 130, "createdAt": T0 + s * 1000} for i in range(players)]


def send(servers, players, seconds=SECONDS, pace_s=0.0):
    """Each second's readings to every server, in the same order (so each partition holds
    the same records at the same offsets on all of them)."""
    for s in seconds:
        body = second(players, s)
        for srv in servers:
            r = requests.post(f"{srv.url}/v1/topics/{TOPIC}/records", json=body, timeout=60)
            assert r.status_code == 200 and r.json()["accepted"] == players, r.text
        if pace_s:
            time.sleep(pace_s)


def sender(servers, players, pace_s):
    """`send` on a thread; join() re-raises its failure."""
    out = {}

    def run():
        try:
            send(servers, players, pace_s=pace_s)
        except BaseException as e:  # noqa: BLE001 - re-raised by join
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join(timeout=600):
        t.join(timeout)
        assert not t.is_alive(), "the sender did not finish"
        if "error" in out:
            raise out["error"]
    return join


def cluster(tmp_path, cfg):
    c = Sluice(tmp_path / "cluster" / "data", log_path=tmp_path / "cluster.log",
               env={"SLUICE_STREAM__ENABLED": "false", "SLUICE_KAFKA__GROUP_INITIAL_REBALANCE_DELAY_MS": "0"})
    c.extra_args = ["--config", str(cfg)]
    return c.start()


def reference(tmp_path, cfg):
    r = Sluice(tmp_path / "ref" / "data", log_path=tmp_path / "ref.log", env={"SLUICE_STREAM__IDLE_TIMEOUT_MS": "0"})
    r.extra_args = ["--config", str(cfg)]
    return r.start()


class Worker:
    """One `sluice worker` process; restartable under the same name."""

    def __init__(self, tmp_path, name, cfg, cluster, lake, state, group="g"):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp_path / name
        self.log_path = tmp_path / f"{name}.log"
        self.args = [str(BIN), "worker", "--config", str(cfg), "--data-dir", str(self.data_dir), "--http-addr", f"127.0.0.1:{self.port}",
                     "--kafka-bootstrap", f"127.0.0.1:{cluster.kafka_port}", "--lake", lake.uri, "--state", state, "--group", group, "--name", name]
        self.env = {**os.environ, **lake.env, "RUST_LOG": "info,sluice_worker=info", "SLUICE_STREAM__IDLE_TIMEOUT_MS": "0",
                    "SLUICE_STREAM__CHECKPOINT_INTERVAL_MS": "500"}
        self.proc = None

    def start(self, timeout=60):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"worker {self.name} did not start; see {self.log_path}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def status(self):
        return requests.get(self.url + "/v1/status", timeout=10).json()

    def drain(self, pipeline):
        deadline = time.time() + 120
        while True:
            r = requests.post(f"{self.url}/v1/pipelines/{pipeline}/drain", timeout=300)
            if r.status_code != 409 or time.time() > deadline:
                assert r.status_code == 200, f"{self.name}: {r.text}"
                return r.json()
            time.sleep(0.5)

    def log(self):
        return Path(self.log_path).read_text(errors="replace")


def wait_stable(workers, partitions, hold_s=3.0, timeout=120):
    """Until every partition runs on exactly one live worker, unchanged for `hold_s`."""
    deadline = time.time() + timeout
    last, since = None, time.time()
    while time.time() < deadline:
        running = []
        try:
            for w in workers:
                st = w.status()
                if len(st["owned"]) != len(st["partitions"]):
                    running = None
                    break
                running += [(p["partition"], w.name) for p in st["partitions"]]
        except requests.RequestException:
            running = None
        if running is not None and sorted(p for p, _ in running) == list(range(partitions)):
            if running != last:
                last, since = running, time.time()
            elif time.time() - since >= hold_s:
                return dict(running)
        else:
            last = None
        time.sleep(0.3)
    raise AssertionError(f"the group did not settle: {last}")


IGNORED = {"ingested_at"}  # the log-append time: differs between two clusters


def rows(lake, table):
    t = lake_table(lake, table)
    assert t is not None, f"no table {table}"
    out = [json.dumps({k: v for k, v in r.items() if k not in IGNORED}, sort_keys=True, default=str) for r in t.to_pylist()]
    return sorted(out)


def assert_same_tables(got_lake, want_lake, tables=("heart_rate", "heartbeat_raw")):
    for table in tables:
        got, want = rows(got_lake, table), rows(want_lake, table)
        missing = set(want) - set(got)
        doubled = len(got) - len(set(got))
        assert not missing and doubled == 0 and len(got) == len(want), (
            f"{table}: {len(got)} rows, want {len(want)}; {len(missing)} missing (e.g. {sorted(missing)[:2]}), {doubled} doubled")
