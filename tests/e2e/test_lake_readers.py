"""The lake written by `sluice demo --exit`: Delta tables read back without sluice by the
`deltalake` package, pyarrow, pandas, Polars and DuckDB, and SQL through `sluice query`
compared with DuckDB on the same committed files."""
import datetime as dt
import json
import subprocess

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

import reference
from conftest import BIN, DATA


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    data = tmp_path_factory.mktemp("lake") / "data"
    r = subprocess.run([str(BIN), "demo", "--exit", "--data-dir", str(data), "--http-addr", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return data, r.stdout


def expected():
    files = sorted(DATA.glob("*.fit")) + sorted(DATA.glob("*.tcx"))
    sessions = {f.stem: reference.sessions(reference.read(f)) for f in files}
    n_readings = sum(len({t for t, _ in reference.read(f)}) for f in files)
    return files, sessions, n_readings


def test_every_reader_sees_the_reference_sessions(demo):
    data, stdout = demo
    files, expected_sessions, n_readings = expected()
    n_sessions = sum(len(s) for s in expected_sessions.values())
    for player, sessions in expected_sessions.items():
        assert sum(1 for line in stdout.splitlines() if line.startswith(player + " ")) == len(sessions), stdout

    lake = data / "lake"
    raw_dt = DeltaTable(str(lake / "heartbeat_raw"))
    assert raw_dt.metadata().partition_columns == ["date"]
    raw = raw_dt.to_pyarrow_table()
    assert raw.num_rows == n_readings
    assert raw.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert raw.schema.field("heartbeat").type == pa.float64()
    assert raw.schema.field("offset").type == pa.int64()
    assert raw.schema.field("date").type == pa.date32()
    for row in raw.select(["created_at", "date"]).to_pylist()[:200]:
        assert row["created_at"].astimezone(dt.timezone.utc).date() == row["date"]

    ses_dt = DeltaTable(str(lake / "heart_rate"))
    sessions = ses_dt.to_pyarrow_table()
    assert sessions.num_rows == n_sessions
    assert sessions.schema.field("session_start").type == pa.timestamp("us", tz="UTC")

    # Every session equals the reference implementation's, in each reader.
    def as_ms(rows):
        return sorted((r["player_id"], round(r["low_s"] * 1000), round(r["moderate_s"] * 1000), round(r["high_s"] * 1000)) for r in rows)
    want = sorted((p, s["low_ms"], s["moderate_ms"], s["high_ms"]) for p, ss in expected_sessions.items() for s in ss)
    assert as_ms(sessions.to_pylist()) == want
    assert as_ms(pl.read_delta(str(lake / "heart_rate")).to_dicts()) == want
    assert as_ms(ses_dt.to_pandas().to_dict("records")) == want
    assert as_ms(ses_dt.to_pyarrow_dataset().to_table().to_pylist()) == want

    # DuckDB over exactly the files the Delta log names.
    con = duckdb.connect()
    con.execute(f"CREATE VIEW raw AS SELECT * FROM read_parquet({raw_dt.file_uris()!r})")
    (count, players, dup) = con.execute(
        "SELECT count(*), count(DISTINCT player_id), count(*) - count(DISTINCT (player_id, created_at)) FROM raw").fetchone()
    assert (count, players, dup) == (n_readings, len(files), 0)


def test_history_has_one_streaming_commit_per_checkpoint_with_its_txn(demo):
    data, _ = demo
    table = data / "lake" / "heart_rate"
    history = DeltaTable(str(table)).history()
    streaming = [h for h in history if h["operation"] == "STREAMING UPDATE"]
    assert streaming, history
    assert history[-1]["operation"] == "CREATE TABLE"
    # The txn actions in the log: one per streaming commit, app id per pipeline, checkpoint
    # ids strictly increasing with the table version.
    txns = []
    for f in sorted((table / "_delta_log").glob("*.json")):
        for line in f.read_text().splitlines():
            action = json.loads(line)
            if "txn" in action:
                txns.append((int(f.stem), action["txn"]["appId"], action["txn"]["version"]))
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
    data, _ = demo
    r = subprocess.run([str(BIN), "query", sql, "--format", "json", "--data-dir", str(data)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ours = [tuple(row.values()) for row in json.loads(r.stdout)["rows"]]
    con = duckdb.connect()
    for name in ("heartbeat_raw", "heart_rate"):
        con.register(name, DeltaTable(str(data / "lake" / name)).to_pyarrow_table())
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
    data, _ = demo
    r = subprocess.run([str(BIN), "query", "SELECT player_id FROM heart_rate WHERE", "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "line 1, column 39" in r.stderr and "ends too early" in r.stderr, r.stderr
    r = subprocess.run([str(BIN), "query", "SELECT nope FROM heart_rate", "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "line 1, column 8" in r.stderr and "nope" in r.stderr, r.stderr
    r = subprocess.run([str(BIN), "query", "COPY heart_rate TO '/tmp/x.parquet'", "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, "queries are read-only"


def test_time_travel_and_tables_cli(demo):
    data, _ = demo
    r = subprocess.run([str(BIN), "tables", "history", "heart_rate", "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "STREAMING UPDATE" in r.stdout and "CREATE TABLE" in r.stdout
    r = subprocess.run([str(BIN), "query", 'SELECT count(*) AS n FROM "heart_rate@0"', "--format", "csv", "--data-dir", str(data)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["n", "0"], "version 0 is the empty table"
    r = subprocess.run([str(BIN), "tables", "list", "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "heart_rate" in r.stdout and "heartbeat_raw" in r.stdout, r.stdout + r.stderr
