"""Fixtures for end-to-end tests: the real `sluice` binary as a child process."""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

import lakes

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("E2E_SLUICE_BIN", ROOT / "target" / "release" / "sluice"))
DATA = ROOT / "examples" / "data"
TOPIC = "heartbeat-raw-topic"


def lake_table(where, name):
    """A lake table as a pyarrow Table, read through its Delta log by the `deltalake` package
    (only committed files; `date` is the partition column); None if absent. `where` is a
    `lakes.LakeLoc` or a data directory (whose `lake/` folder is the lake)."""
    lake = where if isinstance(where, lakes.LakeLoc) else lakes.local(where)
    t = lake.table(name)
    return None if t is None else t.to_pyarrow_table()


def lake_rows(where, name):
    t = lake_table(where, name)
    return [] if t is None else t.to_pylist()


@pytest.fixture(scope="session")
def moto():
    """An S3-API server (moto) on loopback for the whole test session."""
    server = lakes.Moto()
    yield server
    server.stop()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sluice:
    """One `sluice serve` process on a data directory; restartable."""

    def __init__(self, data_dir, env=None, log_path=None, lake=None):
        self.data_dir = Path(data_dir)
        self.lake = lake or lakes.local(self.data_dir)
        self.port = free_port()
        self.kafka_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.verify = True  # requests' `verify`: a CA file for a TLS listener
        self.cert = None  # requests' `cert`: (cert, key) files for a mutual-TLS listener
        self.env = {**os.environ, "RUST_LOG": "info", "SLUICE_KAFKA__ADDR": f"127.0.0.1:{self.kafka_port}", **self.lake.env, **(env or {})}
        self.log_path = Path(log_path or self.data_dir.parent / "sluice.log")
        self.proc = None
        self.extra_args = []
        self.preexec = None  # run in the child before exec (e.g. resource limits)

    def start(self, timeout=30):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--data-dir", str(self.data_dir), "--http-addr", f"127.0.0.1:{self.port}", *self.extra_args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=self.preexec,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if requests.get(self.url + "/healthz", timeout=1, verify=self.verify, cert=self.cert).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"sluice did not become healthy; see {self.log_path}")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout=30):
        """Graceful stop (SIGTERM); returns the exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout=timeout)
        return self.proc.returncode if self.proc else 0

    def drain(self):
        r = requests.post(self.url + "/v1/pipelines/heart_rate/drain", timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    def sessions(self, player=None):
        params = {"player": player} if player else {}
        return requests.get(self.url + "/v1/sessions", params=params, timeout=10).json()

    def records(self, topic, partition=0, offset=0, max=10000):
        r = requests.get(f"{self.url}/v1/topics/{topic}/partitions/{partition}/records",
                         params={"offset": offset, "max": max}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def run_cli(self, *args, timeout=300):
        return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def sluice(tmp_path):
    """A started server with the job's idle timeout disabled (sessions close by watermark or drain)."""
    s = Sluice(tmp_path / "data", env={"SLUICE_STREAM__IDLE_TIMEOUT_MS": "0"})
    s.start()
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


def pytest_configure(config):
    if not BIN.exists():
        raise pytest.UsageError(f"{BIN} is missing: run `cargo build --release` first (or set E2E_SLUICE_BIN)")
