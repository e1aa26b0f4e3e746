"""Streaming SQL pipelines declared at runtime: over the API and the CLI, with declared topic
schemas, windows, lateness, rollups, alerts, live SSE results, output topics read by Kafka
clients and by other pipelines, and persistence across restarts."""
import json
import datetime
import math
import threading
import time
from collections import defaultdict

import requests
from kafka import KafkaConsumer

from conftest import TOPIC, Sluice, lake_rows

BASE = 1_700_000_040_000  # a minute boundary (epoch ms)

ISSUE_SQL = """CREATE PIPELINE hr_1m AS
SELECT "playerId", window_start, window_end,
       avg(heartbeat) AS avg_hr, min(heartbeat) AS min_hr, max(heartbeat) AS max_hr,
       count(*) AS n, approx_percentile_cont(heartbeat, 0.95) AS p95_hr
FROM TUMBLE("heartbeat-raw-topic", "createdAt", INTERVAL '1' MINUTE)
GROUP BY "playerId", window_start, window_end;
"""


def post_records(s, topic, records):
    r = requests.post(f"{s.url}/v1/topics/{topic}/records", json=records, timeout=30)
    assert r.status_code in (200, 422), r.text
    return r.json()


def create(s, **spec):
    r = requests.post(f"{s.url}/v1/pipelines", json=spec, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def drain(s, name):
    r = requests.post(f"{s.url}/v1/pipelines/{name}/drain", timeout=60)
    assert r.status_code == 200, r.text


def table(s, name):
    return lake_rows(s.data_dir, name)


def ms(t):
    return int(t.timestamp() * 1000)


def readings(players, seconds, start=BASE):
    return [{"playerId": p, "heartbeat": 60 + (i * 7 + k * 13) % 120, "createdAt": start + i * 1000}
            for i in range(seconds) for k, p in enumerate(players)]


def test_issue_example_with_the_cli_lake_and_kafka(sluice, tmp_path):
    sql_file = tmp_path / "hr_1m.sql"
    sql_file.write_text(ISSUE_SQL)
    out = sluice.run_cli("pipelines", "--server", sluice.url, "create", "--file", str(sql_file))
    assert out.returncode == 0, out.stderr
    recs = readings(["ann", "bob", "cy"], 200)
    post_records(sluice, TOPIC, recs)
    out = sluice.run_cli("pipelines", "--server", sluice.url, "drain", "hr_1m")
    assert out.returncode == 0, out.stderr
    # Expected, computed here from the input.
    want = defaultdict(list)
    for r in recs:
        want[(r["playerId"], r["createdAt"] // 60000 * 60000)].append(r["heartbeat"])
    rows = table(sluice, "hr_1m")
    assert len(rows) == len(want)
    for row in rows:
        values = sorted(want[(row["playerId"], ms(row["window_start"]))])
        assert ms(row["window_end"]) - ms(row["window_start"]) == 60000
        assert row["n"] == len(values)
        assert row["min_hr"] == values[0] and row["max_hr"] == values[-1]
        assert math.isclose(row["avg_hr"], sum(values) / len(values))
        # t-digest: within a few ranks of the exact 95th percentile.
        lo, hi = values[max(0, int(0.95 * len(values)) - 3)], values[min(len(values) - 1, int(0.95 * len(values)) + 3)]
        assert lo <= row["p95_hr"] <= hi, (row, values)
    # The same rows on the output topic, for any Kafka consumer.
    consumer = KafkaConsumer("hr_1m", bootstrap_servers=f"127.0.0.1:{sluice.kafka_port}", auto_offset_reset="earliest", consumer_timeout_ms=4000)
    got = [json.loads(m.value) for m in consumer]
    consumer.close()
    assert len(got) == len(rows)
    assert {(g["playerId"], g["window_start"]) for g in got} == {(r["playerId"], r["window_start"].isoformat().replace("+00:00", "Z")) for r in rows}
    out = sluice.run_cli("pipelines", "--server", sluice.url, "describe", "hr_1m")
    assert out.returncode == 0 and "p95_hr" in out.stdout and "TUMBLE" in out.stdout, out.stdout


def test_sql_errors_name_the_position_and_the_reason(sluice):
    r = requests.post(f"{sluice.url}/v1/pipelines", json={"name": "bad", "sql": 'SELECT "playerId",\n  nope\nFROM "heartbeat-raw-topic"'}, timeout=10)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "sql_error" and (err["line"], err["column"]) == (2, 3) and "nope" in err["message"]
    r = requests.post(f"{sluice.url}/v1/pipelines", json={"name": "bad", "sql": 'SELECT count(*) FROM "heartbeat-raw-topic"'}, timeout=10)
    assert r.status_code == 400 and "window" in r.json()["error"]["message"]
    out = sluice.run_cli("pipelines", "--server", sluice.url, "create", "bad", "--sql", 'SELECT heartbeat FROM "heartbeat-raw-topic" WHERE')
    assert out.returncode != 0 and "^" in out.stderr and "line 1" in out.stderr, out.stderr
    assert requests.get(f"{sluice.url}/v1/pipelines/bad", timeout=10).status_code == 404


SENSOR_SCHEMA = {"event_time": "ts", "key": "device", "fields": [
    {"name": "device", "type": "string", "required": True},
    {"name": "temp", "type": "float", "path": "$.sensor.temp_c", "min": -60, "max": 80, "unit": "C"},
    {"name": "ts", "type": "timestamp", "format": "rfc3339", "required": True}]}


def iso(ms_):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms_ / 1000)) + f".{ms_ % 1000:03d}Z"


def sensor(device, t_ms, temp):
    return {"device": device, "sensor": {"temp_c": temp}, "ts": iso(t_ms)}


def test_declared_schema_live_stream_and_restart(tmp_path):
    s = Sluice(tmp_path / "data", env={"SLUICE_STREAM__IDLE_TIMEOUT_MS": "0"}).start()
    try:
        r = requests.post(f"{s.url}/v1/topics", json={"name": "sensors", "partitions": 1, "schema": SENSOR_SCHEMA}, timeout=10)
        assert r.status_code == 201, r.text
        bad = post_records(s, "sensors", [sensor("d1", BASE, 20.0), {"device": "d1", "sensor": {"temp_c": 99}, "ts": iso(BASE)}])
        assert bad["rejected"] == 1 and bad["errors"][0]["field"] == "temp" and "99" in bad["errors"][0]["reason"]
        create(s, name="temps", sql="SELECT device, window_start, window_end, count(*) AS n, sum(temp) AS total "
                                    "FROM TUMBLE(sensors, ts, INTERVAL '10' SECOND) GROUP BY device, window_start, window_end",
               max_out_of_orderness_ms=0)
        events = []

        def listen():
            with requests.get(f"{s.url}/v1/pipelines/temps/stream?early=true", stream=True, timeout=30) as resp:
                name = None
                for line in resp.iter_lines(decode_unicode=True):
                    if line.startswith("event:"):
                        name = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and name in ("update", "result"):
                        events.append((name, json.loads(line[5:])))
                        if name == "result":
                            return

        t = threading.Thread(target=listen, daemon=True)
        t.start()
        time.sleep(0.5)
        post_records(s, "sensors", [sensor("d1", BASE + i * 1000, 20.0 + i) for i in range(1, 8)])
        time.sleep(1.5)
        post_records(s, "sensors", [sensor("d1", BASE + 12_000, 30.0)])  # closes [0 s, 10 s)
        t.join(timeout=20)
        kinds = [k for k, _ in events]
        assert "update" in kinds, "early results of the open window arrive live"
        result = next(e for k, e in events if k == "result")
        assert result["rows"][0]["n"] == 8 and result["rows"][0]["total"] == sum(20.0 + i for i in range(8))
        # Restart: the runtime pipeline resumes with its open window.
        assert s.stop() == 0
        s.start()
        listed = {p["name"]: p for p in requests.get(f"{s.url}/v1/pipelines", timeout=10).json()["pipelines"]}
        assert listed["temps"]["state"] == "running" and not listed["temps"]["configured"]
        post_records(s, "sensors", [sensor("d1", BASE + 15_000, 10.0)])
        drain(s, "temps")
        rows = sorted(table(s, "temps"), key=lambda r: r["window_start"])
        assert [(r["n"], r["total"]) for r in rows] == [(8, sum(20.0 + i for i in range(8))), (2, 40.0)]
    finally:
        s.stop()


def test_late_records_are_kept_with_the_reason(sluice):
    create(sluice, name="late_demo", max_out_of_orderness_ms=0, allowed_lateness_ms=0,
           sql='SELECT "playerId", window_start, window_end, count(*) AS n FROM TUMBLE("heartbeat-raw-topic", "createdAt", INTERVAL \'10\' SECOND) '
               'GROUP BY "playerId", window_start, window_end', watermark="per_key")
    post_records(sluice, TOPIC, [{"playerId": "z", "heartbeat": 90, "createdAt": BASE + i * 1000} for i in (0, 1, 25)])
    post_records(sluice, TOPIC, [{"playerId": "z", "heartbeat": 91, "createdAt": BASE + 2000}])  # its window closed at 25 s
    drain(sluice, "late_demo")
    late = [r["value"] for r in sluice.records("late_demo.late")["records"]]
    assert len(late) == 1 and "closed" in late[0]["reason"] and json.loads(late[0]["record"])["heartbeat"] == 91
    assert late[0]["topic"] == TOPIC and late[0]["partition"] is not None and late[0]["offset"] is not None
    p = requests.get(f"{sluice.url}/v1/pipelines/late_demo", timeout=10).json()
    assert p["late_records"] == 1
    metrics = requests.get(f"{sluice.url}/metrics", timeout=10).text
    assert 'sluice_pipeline_late_records_total{pipeline="late_demo"} 1' in metrics
    assert sorted(r["n"] for r in table(sluice, "late_demo")) == [1, 2]


def test_rollups_from_accumulator_state_and_alerts(sluice):
    create(sluice, name="hr_1s", watermark="per_key", max_out_of_orderness_ms=0,
           sql='SELECT "playerId", window_start, window_end, count(*) AS n, avg(heartbeat) AS avg_hr, max(heartbeat) AS max_hr '
               'FROM TUMBLE("heartbeat-raw-topic", "createdAt", INTERVAL \'1\' SECOND) GROUP BY "playerId", window_start, window_end',
           rollups=[{"size_ms": 10_000}, {"size_ms": 60_000, "name": "hr_minutely"}],
           alerts=[{"name": "too_high", "column": "max_hr", "above": 175.0},
                   {"name": "spike", "column": "avg_hr", "baseline_k": 3.0, "min_samples": 20, "trailing": 60}])
    recs = [{"playerId": "rex", "heartbeat": 100 + (i % 3), "createdAt": BASE + i * 1000} for i in range(90)]
    recs[70]["heartbeat"] = 180  # far off the trailing mean, and above 175
    post_records(sluice, TOPIC, recs)
    drain(sluice, "hr_1s")
    fine, ten, minute = table(sluice, "hr_1s"), table(sluice, "hr_1s_10s"), table(sluice, "hr_minutely")
    assert len(fine) == 90 and len(ten) == 9 and len(minute) == 2
    for coarse, size in ((ten, 10_000), (minute, 60_000)):
        for row in coarse:
            start = ms(row["window_start"])
            members = [f for f in fine if start <= ms(f["window_start"]) < start + size]
            assert row["n"] == sum(f["n"] for f in members)
            assert row["max_hr"] == max(f["max_hr"] for f in members)
            assert math.isclose(row["avg_hr"], sum(f["avg_hr"] * f["n"] for f in members) / row["n"])
    alerts = [r["value"] for r in sluice.records("alerts")["records"]]
    rules = {a["rule"] for a in alerts}
    assert rules == {"too_high", "spike"}, alerts
    spike = next(a for a in alerts if a["rule"] == "spike" and a["state"] == "firing")
    assert spike["value"] == 180 and spike["samples"] >= 20 and spike["stddev"] > 0 and abs(spike["z"]) > 3
    assert spike["key"] == {"playerId": "rex"} and spike["window_start"] and spike["pipeline"] == "hr_1s"
    # Each rule fired once, at the 180 bpm second, and resolved at the next second.
    for rule in ("too_high", "spike"):
        seen = [a for a in alerts if a["rule"] == rule]
        assert [a["state"] for a in sorted(seen, key=lambda a: a["window_start"])] == ["firing", "resolved"], seen
        fired, resolved = sorted(seen, key=lambda a: a["window_start"])
        start = lambda a: int(datetime.datetime.fromisoformat(a["window_start"].replace("Z", "+00:00")).timestamp() * 1000)
        assert start(resolved) == start(fired) + 1000 and resolved["fired_at_ms"] == fired["fired_at_ms"]
    p = requests.get(f"{sluice.url}/v1/pipelines/hr_1s", timeout=10).json()
    assert p["alerts"] == 2 and p["alerts_firing"] == 0, p


def test_pipelines_read_other_pipelines_and_outputs_are_protected(sluice):
    create(sluice, name="per10s", max_out_of_orderness_ms=0, watermark="per_key",
           sql='SELECT "playerId" AS player, window_start, window_end, count(*) AS n FROM TUMBLE("heartbeat-raw-topic", "createdAt", INTERVAL \'10\' SECOND) '
               'GROUP BY "playerId", window_start, window_end')
    create(sluice, name="per_minute", max_out_of_orderness_ms=0, watermark="per_key",
           sql="SELECT player, window_start, sum(n) AS n FROM TUMBLE(per10s, window_start, INTERVAL '1' MINUTE) GROUP BY player, window_start, window_end")
    post_records(sluice, TOPIC, readings(["q"], 130))
    drain(sluice, "per10s")
    drain(sluice, "per_minute")
    assert sorted(r["n"] for r in table(sluice, "per_minute")) == [10, 60, 60]
    # Only the pipeline writes its output topic.
    r = requests.post(f"{sluice.url}/v1/topics/per10s/records", json={"player": "x"}, timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "pipeline_output"
    # Configured pipelines are protected; runtime ones are dropped, with their state.
    assert requests.delete(f"{sluice.url}/v1/pipelines/heart_rate", timeout=10).status_code == 409
    assert requests.delete(f"{sluice.url}/v1/pipelines/per_minute", timeout=30).status_code == 200
    assert "per_minute" not in [p["name"] for p in requests.get(f"{sluice.url}/v1/pipelines", timeout=10).json()["pipelines"]]
    assert table(sluice, "per_minute"), "the table stays"
