"""`POST /v1/query` and `/v1/tables` on a running server: the three answer formats carry
the same rows, errors name the position, `open_sessions` is the live state, and a user
limited to certain pipelines sees only their tables. With the lake on the local disk, and
on an S3-API server (moto)."""
import csv
import io
import json
import time

import pyarrow as pa
import pytest
import requests


import reference
from conftest import DATA, TOPIC
from test_auth import call, cli, start, token_for

SQL = "SELECT player_id, count(*) AS n, round(avg(heartbeat), 2) AS avg_hr FROM heartbeat_raw GROUP BY player_id ORDER BY player_id"


def send(s, token, player, readings):
    events = [reference.event(player, t, b) for t, b in readings]
    for i in range(0, len(events), 500):
        r = requests.post(f"{s.url}/v1/topics/{TOPIC}/records", json=events[i:i + 500], headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200, r.text


def query(s, token, sql, accept=None):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if accept:
        headers["Accept"] = accept
    return requests.post(f"{s.url}/v1/query", data=json.dumps({"sql": sql}), headers=headers, timeout=60)


@pytest.mark.parametrize("store", ["local", "s3"])
def test_query_api_formats_errors_live_state_and_limits(tmp_path, request, store):
    s, _ = start(tmp_path, request.getfixturevalue("moto").new_lake() if store == "s3" else None)
    try:
        admin = token_for(s, "root", "admin")
        yoga = reference.read(DATA / "20210323_yoga.tcx")
        half = len(yoga) // 2
        send(s, admin, "yoga", yoga[:half])
        assert call(s, admin, "POST", "/v1/pipelines/heartbeat_raw/drain").status_code == 200

        as_json = query(s, admin, SQL)
        assert as_json.status_code == 200 and as_json.headers["content-type"].startswith("application/json"), as_json.text
        body = as_json.json()
        assert [c["name"] for c in body["columns"]] == ["player_id", "n", "avg_hr"]
        rows = [(r["player_id"], r["n"], r["avg_hr"]) for r in body["rows"]]
        assert rows == [("yoga", half, round(sum(b for _, b in yoga[:half]) / half, 2))], rows

        as_csv = query(s, admin, SQL, "text/csv")
        assert as_csv.headers["content-type"].startswith("text/csv")
        parsed = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert [(r["player_id"], int(r["n"]), float(r["avg_hr"])) for r in parsed] == rows

        as_arrow = query(s, admin, SQL, "application/vnd.apache.arrow.stream")
        table = pa.ipc.open_stream(as_arrow.content).read_all()
        assert list(zip(*[table.column(c).to_pylist() for c in ("player_id", "n", "avg_hr")])) == rows

        # Errors: position and reason, 400; read-only.
        r = query(s, admin, "SELECT player_id FROM heartbeat_raw WHERE")
        assert r.status_code == 400 and r.json()["error"]["code"] == "query_error", r.text
        assert (r.json()["error"]["line"], r.json()["error"]["column"]) == (1, 42), r.text
        assert query(s, admin, "SELECT * FROM nowhere").status_code == 400
        assert query(s, admin, "CREATE TABLE x AS SELECT 1").status_code == 400
        r = requests.post(f"{s.url}/v1/query", json={"query": "SELECT 1"}, headers={"Authorization": f"Bearer {admin}"}, timeout=10)
        assert r.status_code == 400 and "sql" in r.json()["error"]["message"], r.text

        # The live state: the open session of the heart-rate pipeline.
        deadline = time.time() + 20
        while not call(s, admin, "GET", "/v1/sessions?player=yoga").json()["open"]:
            assert time.time() < deadline, "the open session never showed"
            time.sleep(0.2)
        open_rows = query(s, admin, "SELECT player_id, samples FROM open_sessions").json()["rows"]
        assert [r["player_id"] for r in open_rows] == ["yoga"] and open_rows[0]["samples"] > 0, open_rows
        assert call(s, admin, "POST", "/v1/pipelines/heart_rate/drain").status_code == 200
        assert query(s, admin, "SELECT count(*) AS n FROM open_sessions").json()["rows"] == [{"n": 0}]
        assert query(s, admin, "SELECT count(*) AS n FROM heart_rate").json()["rows"] == [{"n": 1}]

        # Tables: listing, description, history.
        tables = {t["name"]: t for t in call(s, admin, "GET", "/v1/tables").json()["tables"]}
        assert tables["heartbeat_raw"]["rows"] == half, tables
        d = call(s, admin, "GET", "/v1/tables/heartbeat_raw").json()
        assert d["partition_columns"] == ["date"] and "heartbeat" in [c["name"] for c in d["columns"]], d
        h = call(s, admin, "GET", "/v1/tables/heartbeat_raw/history").json()["history"]
        assert h[0]["operation"] == "STREAMING UPDATE" and h[-1]["operation"] == "CREATE TABLE", h
        assert call(s, admin, "GET", "/v1/tables/nope").status_code == 404

        # A viewer limited to heart_* pipelines sees only heart_rate's tables.
        cli(s, "users", "add", "vic", "--role", "viewer", "--no-password")
        cli(s, "users", "acl", "vic", "--pipeline", "heart_*")
        vic = cli(s, "tokens", "create", "--user", "vic").strip().splitlines()[-1]
        assert [t["name"] for t in call(s, vic, "GET", "/v1/tables").json()["tables"]] == ["heart_rate"]
        assert query(s, vic, "SELECT count(*) FROM heart_rate").status_code == 200
        r = query(s, vic, SQL)
        assert r.status_code == 400 and "heartbeat_raw" in r.json()["error"]["message"], r.text
        assert call(s, vic, "GET", "/v1/tables/heartbeat_raw").status_code == 404
        assert query(s, vic, "SELECT count(*) AS n FROM open_sessions").status_code == 200
        # A table holds what its output topic of the same name holds: topic limits apply too.
        cli(s, "users", "acl", "vic", "--topic", "heartbeat_*")
        time.sleep(1)  # the server re-reads the principals file within 250 ms
        assert call(s, vic, "GET", "/v1/tables").json()["tables"] == []
        r = query(s, vic, "SELECT count(*) FROM heart_rate")
        assert r.status_code == 400 and "heart_rate" in r.json()["error"]["message"], r.text
        assert query(s, vic, "SELECT count(*) AS n FROM open_sessions").status_code == 400
        assert requests.post(f"{s.url}/v1/query", json={"sql": "SELECT 1"}, timeout=10).status_code == 401
    finally:
        s.stop()


def test_query_time_and_memory_limits(tmp_path):
    """A query past `[lake] query_timeout_ms` gets 408, one past `query_memory_bytes` a 400
    that names the setting; both before any row, and the server keeps answering."""
    from conftest import Sluice
    s = Sluice(tmp_path / "data", env={"SLUICE_STREAM__IDLE_TIMEOUT_MS": "0", "SLUICE_LAKE__QUERY_TIMEOUT_MS": "1500",
                                       "SLUICE_LAKE__QUERY_MEMORY_BYTES": "262144"}).start()
    try:
        readings = reference.read(DATA / "20210119_run_garmin_fenix6.tcx")
        r = requests.post(f"{s.url}/v1/topics/{TOPIC}/records", json=[reference.event("run", t, b) for t, b in readings], timeout=30)
        assert r.status_code == 200, r.text
        assert requests.post(f"{s.url}/v1/pipelines/heartbeat_raw/drain", timeout=60).status_code == 200

        def ask(sql):
            return requests.post(f"{s.url}/v1/query", json={"sql": sql}, timeout=60)
        # 1,232⁴ ≈ 2.3 trillion joined rows (of no columns, so in little memory): far past 1.5 s.
        started = time.time()
        r = ask("SELECT count(*) FROM heartbeat_raw a, heartbeat_raw b, heartbeat_raw c, heartbeat_raw d")
        assert r.status_code == 408 and r.json()["error"]["code"] == "query_timeout", r.text
        assert "query_timeout_ms" in r.json()["error"]["message"]
        assert time.time() - started < 10, "the answer came at the limit"
        # The runaway query may still be running on the query runtime (DataFusion stops
        # only at its next yield), but the server answers at once.
        started = time.time()
        assert requests.get(f"{s.url}/healthz", timeout=10).status_code == 200
        assert time.time() - started < 2, "a runaway query starved the server"
        # Holding every pair of readings needs far more than 256 KiB.
        r = ask("SELECT max(a.heartbeat + b.heartbeat) FROM heartbeat_raw a, heartbeat_raw b, heartbeat_raw c")
        assert r.status_code == 400 and r.json()["error"]["code"] == "query_resources_exhausted", r.text
        assert "query_memory_bytes" in r.json()["error"]["message"]
        r = ask("SELECT count(*) AS n FROM heartbeat_raw")
        assert r.status_code == 200 and r.json()["rows"] == [{"n": len(readings)}], r.text
        r = ask("SELECT * FROM heartbeat_raw WHERE heartbeat < 0")
        assert r.status_code == 200 and r.json()["rows"] == [], r.text
    finally:
        assert s.stop(timeout=20) == 0, "SIGTERM stops the server even with a runaway query"
