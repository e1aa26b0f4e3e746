"""Monitoring that plugs into Prometheus and Grafana: `promtool check metrics` on a real
scrape, a real Prometheus (Debian's package) scraping sluice and answering PromQL on ingest
rate and consumer lag, the shipped alert rules (checked and unit-tested by promtool) and
Grafana dashboard (every query valid on that Prometheus), `/readyz`, processing-status
events on `GET /v1/events` with `Last-Event-ID` resume, and the JSON log format."""
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from kafka import KafkaProducer

from conftest import ROOT, TOPIC, Sluice, free_port

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
DEPLOY = ROOT / "deploy"
BASE = 1_700_000_040_000



def needs_prometheus(test):
    """Fails (not skips) without Debian's `prometheus` package: scripts/test.sh installs it."""
    import functools

    @functools.wraps(test)
    def run(*a, **k):
        assert PROMTOOL and PROMETHEUS, "promtool and prometheus are missing: apt-get install --no-install-recommends prometheus"
        return test(*a, **k)
    return run


def readings(player, start, n):
    return [{"playerId": player, "heartbeat": 80 + i % 90, "createdAt": start + i * 1000} for i in range(n)]


def post(s, records, topic=TOPIC):
    r = requests.post(f"{s.url}/v1/topics/{topic}/records", json=records, timeout=30)
    assert r.status_code in (200, 422), r.text
    return r.json()


def promql(url, query):
    r = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=10)
    body = r.json()
    assert body["status"] == "success", (query, body)
    return body["data"]["result"]


def wait_for(what, fn, timeout=60):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


@needs_prometheus
def test_rules_pass_promtool():
    for args in (["check", "rules", "sluice-alerts.yml"], ["test", "rules", "sluice-alerts.test.yml"], ["check", "config", "prometheus.yml"]):
        out = subprocess.run([PROMTOOL, *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (args, out.stdout, out.stderr)


@needs_prometheus
def test_prometheus_scrapes_sluice_and_answers_promql(tmp_path):
    s = Sluice(tmp_path / "data").start()
    prom = None
    try:
        # Something in every family: HTTP and Kafka ingest, a rejected record, a checkpoint.
        post(s, readings("ann", BASE, 30) + [{"playerId": "bad", "heartbeat": "x", "createdAt": BASE}])
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{s.kafka_port}")
        for r in readings("bob", BASE, 20):
            producer.send(TOPIC, json.dumps(r).encode(), key=b"bob")
        producer.flush()
        producer.close()
        s.drain()
        # A consumer group that committed offset 5 on every partition.
        parts = requests.get(f"{s.url}/v1/topics/{TOPIC}", timeout=10).json()["partitions"]
        hw = {p["partition"]: p["high_watermark"] for p in parts}
        commits = [{"topic": TOPIC, "partition": p, "offset": min(5, h)} for p, h in hw.items()]
        assert requests.post(f"{s.url}/v1/groups/mon/offsets", json={"offsets": commits}, timeout=10).status_code == 200
        want_lag = sum(h - min(5, h) for h in hw.values())
        assert want_lag > 0

        text = requests.get(f"{s.url}/metrics", timeout=10).text
        out = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr
        for name in ("sluice_ready 1", "sluice_log_poisoned 0", 'sluice_pipeline_state{pipeline="heart_rate",state="running"} 1',
                     "sluice_disk_free_bytes", "sluice_checkpoint_duration_seconds_bucket", 'sluice_group_lag_records{group="mon"'):
            assert name in text, name

        # A real Prometheus scraping every second, with the shipped rules loaded.
        port = free_port()
        (tmp_path / "prom.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{DEPLOY / 'prometheus' / 'sluice-alerts.yml'}"]
scrape_configs:
  - job_name: sluice
    static_configs: [{{targets: ["127.0.0.1:{s.port}"]}}]
""")
        log = open(tmp_path / "prometheus.log", "wb")
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prom.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        wait_for("the first scrape", lambda: prom.poll() is None and _safe(lambda: promql(url, 'up{job="sluice"} == 1')), timeout=60)
        # Ingest across several scrapes, so the counter rises between samples.
        for i in range(6):
            post(s, readings("cy", BASE + 100_000 + i * 10_000, 10))
            time.sleep(0.7)
        rate = wait_for("an ingest rate", lambda: promql(url, f'sum(rate(sluice_ingest_records_total{{topic="{TOPIC}"}}[30s])) > 0'))
        assert float(rate[0]["value"][1]) > 0
        # The 60 readings since were not committed; the next scrapes catch up with the last.
        lag_query = f'sum by (group) (sluice_group_lag_records{{group="mon"}}) == {want_lag + 60}'
        lag = wait_for("the consumer lag", lambda: promql(url, lag_query))
        assert int(float(lag[0]["value"][1])) == want_lag + 60, lag
        # The shipped rules loaded and evaluate cleanly against real series.
        rules = requests.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        assert rules and all(r["health"] in ("ok", "unknown") for g in rules for r in g["rules"]), rules
        firing = requests.get(f"{url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        assert not [a for a in firing if a["labels"]["alertname"] in ("SluiceLogPoisoned", "SluicePipelineFailed")], firing

        # Every query of the shipped Grafana dashboard is valid PromQL over real series.
        dash = json.loads((DEPLOY / "grafana" / "sluice-dashboard.json").read_text())
        exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
        assert len(exprs) > 15
        # Metric names the dashboard uses are defined in telemetry.rs (some appear only after an event).
        import re
        names = set(re.findall(r'"(sluice_[a-z_]+)"', (ROOT / "crates" / "sluice-core" / "src" / "telemetry.rs").read_text()))
        for e in exprs:
            q = e.replace("$instance", ".*").replace("$__rate_interval", "30s")
            promql(url, q)
            used = {w for w in _words(q) if w.startswith("sluice_")}
            unknown = {w for w in used if w not in names and re.sub(r"_(bucket|sum|count)$", "", w) not in names}
            assert not unknown, (e, unknown)
    finally:
        if prom:
            prom.terminate()
            prom.wait(timeout=30)
        s.stop()


def _safe(fn):
    try:
        return fn()
    except (requests.RequestException, AssertionError, ValueError):
        return None


def _words(q):
    import re
    return re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", q)


def sse(resp):
    """Parses a Server-Sent Events response into dicts {id, event, data}."""
    ev = {}
    for raw in resp.iter_lines(decode_unicode=True):
        if raw is None:
            continue
        if raw == "":
            if "data" in ev:
                ev["data"] = json.loads(ev["data"])
                yield ev
            ev = {}
        elif raw.startswith(":"):
            continue
        else:
            k, _, v = raw.partition(":")
            ev[k] = v[1:] if v.startswith(" ") else v


def take(url, headers, until, params=None):
    """Events from /v1/events until `until(events)` is true; the stream is then closed."""
    got = []
    with requests.get(f"{url}/v1/events", headers=headers, params=params, stream=True, timeout=(5, 30)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for ev in sse(r):
            got.append(ev)
            if until(got):
                return got
    raise AssertionError(f"stream ended after {got}")


def test_readyz_events_resume_and_json_log(tmp_path):
    s = Sluice(tmp_path / "data", env={"SLUICE_LOG_FORMAT": "json"}).start()
    try:
        r = requests.get(f"{s.url}/readyz", timeout=10)
        assert r.status_code == 200 and r.json() == {"ready": True, "reasons": []}
        # From the start (Last-Event-ID 0): the configured pipelines went starting → running.
        first = take(s.url, {"Last-Event-ID": "0"}, lambda g: sum(e["event"] == "pipeline_state" and e["data"]["state"] == "running" for e in g) >= 2)
        assert [int(e["id"]) for e in first] == list(range(1, len(first) + 1))
        hr = [e["data"] for e in first if e["data"].get("pipeline") == "heart_rate"]
        assert [(e["previous"], e["state"]) for e in hr] == [(None, "starting"), ("starting", "running")]

        # A checkpoint after ingest shows up with its figures.
        post(s, readings("ann", BASE, 50))
        s.drain()
        got = take(s.url, {"Last-Event-ID": first[-1]["id"]}, lambda g: any(e["event"] == "checkpoint_completed" and e["data"]["written_bytes"] > 0 for e in g))
        cp = [e for e in got if e["event"] == "checkpoint_completed"][-1]
        assert cp["data"]["kind"] == "checkpoint_completed" and "heart_rate" in cp["data"]["pipelines"]
        assert cp["data"]["duration_ms"] >= 0 and cp["data"]["checkpoint_id"] >= 1
        seen = int(got[-1]["id"])

        # While no one listens: a new pipeline starts and checkpoints.
        sql = 'SELECT "playerId", window_start, count(*) AS n FROM TUMBLE("heartbeat-raw-topic", "createdAt", INTERVAL \'1\' MINUTE) GROUP BY "playerId", window_start, window_end'
        assert requests.post(f"{s.url}/v1/pipelines", json={"name": "per_minute", "sql": sql}, timeout=30).status_code == 201
        post(s, readings("bob", BASE, 20))
        assert requests.post(f"{s.url}/v1/pipelines/per_minute/drain", timeout=60).status_code == 200
        # Reconnect with the last id seen: every event since, once, in order.
        after = take(s.url, {"Last-Event-ID": str(seen)}, lambda g: any(e["event"] == "checkpoint_completed" and "per_minute" in e["data"]["pipelines"] for e in g))
        ids = [int(e["id"]) for e in after]
        assert ids == list(range(seen + 1, seen + 1 + len(ids))), ids
        states = [e["data"]["state"] for e in after if e["data"].get("pipeline") == "per_minute"]
        assert states[:2] == ["starting", "running"], after

        # Filters: by kind, and by pipeline.
        only = take(s.url, {}, lambda g: len(g) >= 2, params={"kind": "checkpoint_completed", "last_event_id": 0})
        assert {e["event"] for e in only} == {"checkpoint_completed"}
        mine = take(s.url, {"Last-Event-ID": "0"}, lambda g: len(g) >= 2, params={"pipeline": "per_minute"})
        assert all(e["data"].get("pipeline") == "per_minute" or "per_minute" in e["data"].get("pipelines", []) for e in mine)

        # `sluice status`: one screen with all of it.
        assert requests.post(f"{s.url}/v1/groups/mon/offsets", json={"offsets": [{"topic": TOPIC, "partition": 0, "offset": 0}]}, timeout=10).status_code == 200
        out = s.run_cli("status", "--server", s.url, timeout=60)
        assert out.returncode == 0, out.stderr
        screen = out.stdout
        for want in [f"sluice at {s.url}: ready, log writable", "disk: ", TOPIC, "mon", "heart_rate", "per_minute", "running", "RECENT EVENTS", "checkpoint #"]:
            assert want in screen, (want, screen)
    finally:
        s.stop()
    # The log is one JSON object per line; processing-status events are among them.
    lines = [ln for ln in Path(s.log_path).read_text().splitlines() if ln.strip()]
    parsed = [json.loads(ln) for ln in lines]
    kinds = {p.get("kind") for p in parsed if p.get("target") == "sluice::events"}
    assert {"pipeline_state", "checkpoint_completed"} <= kinds, kinds
    assert all("level" in p and "timestamp" in p for p in parsed)
