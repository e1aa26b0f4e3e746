"""The lake written by `sluice demo --exit`: Delta tables read back without sluice by the
`deltalake` package, pyarrow, pandas, Polars and DuckDB, and SQL through `sluice query`
compared with DuckDB on the same committed files. Every test runs twice: with the lake on
the local disk, and on an S3-API server (moto) on loopback."""
import datetime as dt
import json
import os
import subprocess

import duckdb
import polars as pl
import pyarrow as pa
import pytest

import lakes
import reference
from conftest import BIN, DATA


@pytest.fixture(scope="module", params=["local", "s3"])
def demo(tmp_path_factory, request):
    data = tmp_path_factory.mktemp("lake") / "data"
    lake = request.getfixturevalue("moto").new_lake() if request.param == "s3" else lakes.local(data)
    r = subprocess.run([str(BIN), "demo", "--exit", "--data-dir", str(data), "--http-addr", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, **lake.env})
    assert r.returncode == 0, r.stderr
    assert f"Sessions table: {lake.uri}/heart_rate" in r.stdout.replace("file://", ""), r.stdout
    return data, r.stdout, lake


def cli(demo, *args):
    data, _, lake = demo
    return subprocess.run([str(BIN), *args, "--data-dir", str(data)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **lake.env})


def expected():
    files = sorted(DATA.glob("*.fit")) + sorted(DATA.glob("*.tcx"))
    sessions = {f.stem: reference.sessions(reference.read(f)) for f in files}
    n_readings = sum(len({t for t, _ in reference.read(f)}) for f in files)
    return files, sessions, n_readings


def test_every_reader_sees_the_reference_sessions(demo):
    data, stdout, lake = demo
    files, expected_sessions, n_readings = expected()
    n_sessions = sum(len(s) for s in expected_sessions.values())
    for player, sessions in expected_sessions.items():
        assert sum(1 for line in stdout.splitlines() if line.startswith(player + " ")) == len(sessions), stdout

    raw_dt = lake.table("heartbeat_raw")
    assert raw_dt.metadata().partition_columns == ["date"]
    raw = raw_dt.to_pyarrow_table()
    assert raw.num_rows == n_readings
    assert raw.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert raw.schema.field("heartbeat").type == pa.float64()
    assert raw.schema.field("offset").type == pa.int64()
    assert raw.schema.field("date").type == pa.date32()
    for row in raw.select(["created_at", "date"]).to_pylist()[:200]:
        assert row["created_at"].astimezone(dt.timezone.utc).date() == row["date"]

    ses_dt = lake.table("heart_rate")
    sessions = ses_dt.to_pyarrow_table()
    assert sessions.num_rows == n_sessions
    assert sessions.schema.field("session_start").type == pa.timestamp("us", tz="UTC")

    # Every session equals the reference implementation's, in each reader.
    def as_ms(rows):
        return sorted((r["player_id"], round(r["low_s"] * 1000), round(r["moderate_s"] * 1000), round(r["high_s"] * 1000)) for r in rows)
    want = sorted((p, s["low_ms"], s["moderate_ms"], s["high_ms"]) for p, ss in expected_sessions.items() for s in ss)
    assert as_ms(sessions.to_pylist()) == want
    assert as_ms(pl.read_delta(lake.table_uri("heart_rate"), storage_options=lake.storage_options).to_dicts()) == want
    assert as_ms(ses_dt.to_pandas().to_dict("records")) == want
    assert as_ms(ses_dt.to_pyarrow_dataset().to_table().to_pylist()) == want

    # DuckDB over exactly the files the Delta log names.
    con = duckdb.connect()
    con.register("raw", lake.read_files(raw_dt.file_uris()))
    (count, players, dup) = con.execute(
        "SELECT count(*), count(DISTINCT player_id), count(*) - count(DISTINCT (player_id, created_at)) FROM raw").fetchone()
    assert (count, players, dup) == (n_readings, len(files), 0)


def test_history_has_one_streaming_commit_per_checkpoint_with_its_txn(demo):
    lake = demo[2]
    history = lake.table("heart_rate").history()
    streaming = [h for h in history if h["operation"] == "STREAMING UPDATE"]
    assert streaming, history
    assert history[-1]["operation"] == "CREATE TABLE"
    # The txn actions in the log: one per streaming commit, app id per pipeline, checkpoint
    # ids strictly increasing with the table version.
    txns = [(v, a["txn"]["appId"], a["txn"]["version"]) for v, a in lake.log_actions("heart_rate") if "txn" in a]
    assert len(txns) == len(streaming)
    assert {app for _, app, _ in txns} == {"sluice/heart_rate"}
    ids = [v for _, _, v in txns]
    assert ids == sorted(set(ids)), "each checkpoint committed once, in order"
    epochs = sorted(int(h["operationParameters"]["epochId"]) for h in streaming)
    assert epochs == ids


QUERIES = [
    # aggregates
    "SELECT player_id, count(*) AS n, round(avg(heartbeat), 3) AS avg_hr, min(heartbeat) AS lo, max(heartbeat) AS hi "
    "FROM heartbeat_raw GROUP BY player_id ORDER BY player_id",
    "SELECT count(*) AS sessions, round(sum(low_s + moderate_s + high_s), 3) AS zone_s FROM heart_rate",
    # a join between the sessions and a pipeline table
    "SELECT s.player_id, s.samples, count(r.heartbeat) AS readings FROM heart_rate s "
    "JOIN heartbeat_raw r ON r.player_id = s.player_id AND r.created_at >= s.session_start AND r.created_at < s.session_end "
    "GROUP BY s.player_id, s.samples ORDER BY s.player_id, s.samples",
    # time filters, one on the partition column
    "SELECT player_id, count(*) AS n FROM heartbeat_raw WHERE created_at >= TIMESTAMP '2021-01-01 00:00:00+00:00' "
    "AND created_at < TIMESTAMP '2022-01-01 00:00:00+00:00' GROUP BY player_id ORDER BY player_id",
    "SELECT CAST(date AS VARCHAR) AS day, count(*) AS n FROM heartbeat_raw WHERE date >= DATE '2021-03-01' GROUP BY date ORDER BY day",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_sluice_query_equals_duckdb(demo, sql):
    lake = demo[2]
    r = cli(demo, "query", sql, "--format", "json")
    assert r.returncode == 0, r.stderr
    ours = [tuple(row.values()) for row in json.loads(r.stdout)["rows"]]
    con = duckdb.connect()
    for name in ("heartbeat_raw", "heart_rate"):
        con.register(name, lake.table(name).to_pyarrow_table())
    theirs = con.execute(sql).fetchall()
    assert len(ours) == len(theirs) and ours, (ours[:5], theirs[:5])
    for a, b in zip(ours, theirs):
        assert [norm(x) for x in a] == [norm(x) for x in b], (a, b)


def norm(x):
    if isinstance(x, float):
        return round(x, 6)
    if isinstance(x, (dt.date, dt.datetime)):
        return x.isoformat()
    return x


def test_query_errors_name_the_position_and_reason(demo):
    r = cli(demo, "query", "SELECT player_id FROM heart_rate WHERE")
    assert r.returncode != 0
    assert "line 1, column 39" in r.stderr and "ends too early" in r.stderr, r.stderr
    r = cli(demo, "query", "SELECT nope FROM heart_rate")
    assert r.returncode != 0 and "line 1, column 8" in r.stderr and "nope" in r.stderr, r.stderr
    r = cli(demo, "query", "COPY heart_rate TO '/tmp/x.parquet'")
    assert r.returncode != 0, "queries are read-only"


def test_time_travel_and_tables_cli(demo):
    r = cli(demo, "tables", "history", "heart_rate")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "STREAMING UPDATE" in r.stdout and "CREATE TABLE" in r.stdout
    assert lines[-1].split()[0] == "0" and lines[1].split()[0] == str(len(lines) - 2), "versions, newest first"
    r = cli(demo, "query", 'SELECT count(*) AS n FROM "heart_rate@0"', "--format", "csv")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["n", "0"], "version 0 is the empty table"
    r = cli(demo, "tables", "list")
    assert r.returncode == 0 and "heart_rate" in r.stdout and "heartbeat_raw" in r.stdout, r.stdout + r.stderr
    r = cli(demo, "tables", "optimize", "heartbeat_raw")
    # The demo commits one file per date: nothing to bin-pack, but the table is read.
    assert r.returncode == 0 and "nothing to compact" in r.stdout, r.stdout + r.stderr
    r = cli(demo, "tables", "vacuum", "heartbeat_raw", "--retention-ms", "3600000", "--dry-run")
    assert r.returncode == 0 and "0 files would be deleted" in r.stdout, "the compacted files are within the retention: " + r.stdout
