"""The lake written by `sluice demo --exit`, read back by pyarrow and DuckDB, without sluice."""
import datetime as dt

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

import reference
from conftest import BIN, DATA

import subprocess


def test_demo_then_read_lake_with_pyarrow_and_duckdb(tmp_path):
    data = tmp_path / "data"
    r = subprocess.run([str(BIN), "demo", "--exit", "--data-dir", str(data), "--http-addr", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    files = sorted(DATA.glob("*.fit")) + sorted(DATA.glob("*.tcx"))
    expected_sessions = {f.stem: reference.sessions(reference.read(f)) for f in files}
    n_readings = sum(len({t for t, _ in reference.read(f)}) for f in files)
    n_sessions = sum(len(s) for s in expected_sessions.values())
    # The printed table: one row per session.
    for player, sessions in expected_sessions.items():
        assert sum(1 for line in r.stdout.splitlines() if line.startswith(player + " ")) == len(sessions), r.stdout

    lake = data / "lake"
    raw = ds.dataset(lake / "heartbeat_raw", format="parquet", partitioning="hive").to_table()
    assert raw.num_rows == n_readings
    assert raw.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert raw.schema.field("ingested_at").type == pa.timestamp("us", tz="UTC")
    assert raw.schema.field("heartbeat").type == pa.float64()
    assert raw.schema.field("partition").type == pa.int32()
    assert raw.schema.field("offset").type == pa.int64()
    # Hive partitions are the event dates.
    for row in raw.select(["created_at", "date"]).to_pylist()[:200]:
        assert row["created_at"].astimezone(dt.timezone.utc).date().isoformat() == str(row["date"])

    sessions = ds.dataset(lake / "heart_rate", format="parquet", partitioning="hive").to_table()
    assert sessions.num_rows == n_sessions
    assert sessions.schema.field("session_start").type == pa.timestamp("us", tz="UTC")

    con = duckdb.connect()
    raw_glob = f"{lake}/heartbeat_raw/**/*.parquet"
    ses_glob = f"{lake}/heart_rate/**/*.parquet"
    (count, players, dup) = con.execute(
        f"SELECT count(*), count(DISTINCT player_id), count(*) - count(DISTINCT (player_id, created_at)) "
        f"FROM read_parquet('{raw_glob}', hive_partitioning = true)").fetchone()
    assert (count, players, dup) == (n_readings, len(files), 0)
    total_samples, = con.execute(f"SELECT sum(samples) FROM read_parquet('{ses_glob}', hive_partitioning = true)").fetchone()
    assert total_samples == n_readings
    # Zone seconds add up to the covered time of each session.
    bad = con.execute(
        f"SELECT count(*) FROM read_parquet('{ses_glob}', hive_partitioning = true) "
        f"WHERE low_s + moderate_s + high_s > epoch(session_end - session_start) + 0.001").fetchone()[0]
    assert bad == 0
    yoga = con.execute(f"SELECT low_s, moderate_s, high_s FROM read_parquet('{ses_glob}') WHERE player_id = '20210323_yoga'").fetchall()
    want = expected_sessions["20210323_yoga"][0]
    assert yoga == [(want["low_ms"] / 1000, want["moderate_ms"] / 1000, want["high_ms"] / 1000)]
    assert not any((lake / "_staging").iterdir()), "nothing left uncommitted"
