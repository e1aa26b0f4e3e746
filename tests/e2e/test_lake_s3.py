"""The lake on an S3-API server (moto): credentials from the environment and the config are
used but never written to a log or printed, and a lake the server cannot reach stops the
start with the store's answer. (The demo, readers, SQL and crash tests run on S3 too: see
test_lake_readers.py, test_query_api.py and test_lake_crash.py.)"""
import os
import secrets
import subprocess

import requests

import reference
from conftest import BIN, DATA, TOPIC, Sluice


def test_credentials_are_used_but_never_logged(tmp_path, moto):
    lake = moto.new_lake()
    from_env, from_config = "envsecret" + secrets.token_hex(8), "cfgsecret" + secrets.token_hex(8)
    env = {"AWS_SECRET_ACCESS_KEY": from_env, "SLUICE_LAKE__STORAGE_OPTIONS__AWS_SESSION_TOKEN": from_config, "RUST_LOG": "debug"}
    s = Sluice(tmp_path / "data", env=env, lake=lake).start()
    try:
        yoga = reference.read(DATA / "20210323_yoga.tcx")[:300]
        r = requests.post(f"{s.url}/v1/topics/{TOPIC}/records", json=[reference.event("yoga", t, b) for t, b in yoga], timeout=30)
        assert r.status_code == 200, r.text
        assert requests.post(f"{s.url}/v1/pipelines/heartbeat_raw/drain", timeout=60).status_code == 200
        assert lake.table("heartbeat_raw").to_pyarrow_table().num_rows == 300, "committed to the S3 lake"
        q = requests.post(f"{s.url}/v1/query", json={"sql": "SELECT count(*) AS n FROM heartbeat_raw"}, timeout=30)
        assert q.json()["rows"] == [{"n": 300}], q.text
    finally:
        assert s.stop() == 0
    outputs = [s.log_path.read_text()]
    cli_env = {**os.environ, **lake.env, **env}
    for args in (["query", "SELECT count(*) FROM heartbeat_raw"], ["tables", "list"], ["config"]):
        r = subprocess.run([str(BIN), *args, "--data-dir", str(s.data_dir)], capture_output=True, text=True, timeout=60, env=cli_env)
        assert r.returncode == 0, r.stderr
        outputs += [r.stdout, r.stderr]
    assert "debug" in outputs[0].lower() or "DEBUG" in outputs[0], "the server logged at debug level"
    assert 'aws_session_token = "<redacted>"' in outputs[-2], outputs[-2]
    for text in outputs:
        assert from_env not in text and from_config not in text, "a credential was printed"


def test_an_unreachable_lake_stops_the_start_naming_it(tmp_path, moto):
    lake = moto.new_lake()
    env = {**os.environ, **lake.env, "SLUICE_LAKE__LOCATION": "s3://no-such-bucket/lake"}
    r = subprocess.run([str(BIN), "serve", "--data-dir", str(tmp_path / "data"), "--http-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0
    assert "s3://no-such-bucket/lake" in r.stderr and "NoSuchBucket" in r.stderr, r.stderr
    env["SLUICE_LAKE__LOCATION"] = "ftp://host/lake"
    r = subprocess.run([str(BIN), "serve", "--data-dir", str(tmp_path / "data"), "--http-addr", "127.0.0.1:0"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0 and "ftp" in r.stderr and "s3://bucket/prefix" in r.stderr, r.stderr
