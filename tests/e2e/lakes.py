"""Where a test's lake is: the data directory's `lake/` folder, or a prefix on an S3-API
server (moto, on loopback). Readers reach both through the same calls."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable


class LakeLoc:
    """A lake root: `uri` (a local path or s3://bucket/prefix), the `deltalake`/Polars
    storage options to read it, the pyarrow filesystem for its files, and the environment a
    `sluice` process needs to use it."""

    def __init__(self, uri, storage_options=None, fs=None, env=None):
        self.uri = str(uri).rstrip("/")
        self.storage_options = storage_options
        self.fs = fs or pafs.LocalFileSystem()
        self.env = env or {}

    def table_uri(self, name):
        return f"{self.uri}/{name}"

    def _fs_path(self, uri):
        return uri.removeprefix("s3://").removeprefix("file://")

    def has_table(self, name):
        info = self.fs.get_file_info(pafs.FileSelector(self._fs_path(self.table_uri(name)) + "/_delta_log", allow_not_found=True))
        return any(i.path.endswith(".json") for i in info)

    def table(self, name):
        """The table as a `deltalake.DeltaTable`, or None if it has no Delta log."""
        if not self.has_table(name):
            return None
        return DeltaTable(self.table_uri(name), storage_options=self.storage_options)

    def exists(self, file_uri):
        return self.fs.get_file_info(self._fs_path(file_uri)).type == pafs.FileType.File

    def read_files(self, file_uris):
        """The rows of exactly these Parquet files (for DuckDB to query)."""
        return pq.read_table([self._fs_path(u) for u in file_uris], filesystem=self.fs, partitioning=None)

    def log_actions(self, name):
        """Every action of the table's JSON commits: [(version, action)], by version."""
        out = []
        log = self._fs_path(self.table_uri(name)) + "/_delta_log"
        for info in sorted(self.fs.get_file_info(pafs.FileSelector(log)), key=lambda i: i.path):
            if not info.path.endswith(".json"):
                continue
            with self.fs.open_input_stream(info.path) as f:
                for line in f.read().decode().splitlines():
                    out.append((int(Path(info.path).stem), json.loads(line)))
        return out


def local(data_dir):
    return LakeLoc(Path(data_dir) / "lake")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    """A `moto_server` (from the venv that runs the tests) on a loopback port."""

    def __init__(self):
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        binary = Path(sys.executable).parent / "moto_server"
        self.proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.05)
        self.buckets = 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def new_lake(self):
        """A new bucket, and a lake under its `lake/` prefix."""
        import boto3
        self.buckets += 1
        bucket = f"lake-{self.buckets}"
        creds = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
        boto3.client("s3", endpoint_url=self.endpoint, **creds).create_bucket(Bucket=bucket)
        uri = f"s3://{bucket}/lake"
        env = {
            # The usual AWS variables, as a deployment would set them.
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true",
            "SLUICE_LAKE__LOCATION": uri,
        }
        options = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                   "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
        fs = pafs.S3FileSystem(access_key="test", secret_key="test", region="us-east-1",
                               endpoint_override=f"127.0.0.1:{self.port}", scheme="http")
        return LakeLoc(uri, storage_options=options, fs=fs, env=env)
