"""`sluice worker`: the pipelines as workers of one consumer group over an external
Kafka-protocol cluster (here `sluice serve`'s Kafka listener over its embedded log, with its
own pipelines off), with their checkpoints and the lake on S3 (moto).

- Workers killed with SIGKILL and restarted, over and over, and one more joining midway,
  end with the Delta tables of one uninterrupted single-process run (`sluice serve` with the
  same config, fed the same records in the same order): nothing missing, nothing doubled.
- A worker paused (SIGSTOP) past its session timeout, whose partitions moved on, commits
  nothing when it resumes."""
import json
import os
import random
import signal
import subprocess
import time

import requests

import workers as wk
from conftest import BIN, TOPIC

PARTITIONS = 12
PLAYERS = 1000
ROUNDS = int(os.environ.get("E2E_WORKER_ROUNDS", "30"))


def committed_offsets(cluster, group):
    g = requests.get(f"{cluster.url}/v1/groups/{group}", timeout=10)
    assert g.status_code == 200, g.text
    return {o["partition"]: (o["offset"], o["lag"]) for o in g.json()["offsets"] if o["topic"] == TOPIC}


def running(w):
    try:
        return bool(w.status()["partitions"])
    except requests.RequestException:
        return False


def test_killed_and_added_workers_end_with_the_single_process_tables(tmp_path, moto):
    seed = int(os.environ.get("E2E_SEED", random.randrange(1 << 30)))
    print(f"E2E_SEED={seed}")
    rng = random.Random(seed)
    cfg = wk.config(tmp_path / "sluice.toml", PARTITIONS, session_timeout_ms=3000)
    cluster = wk.cluster(tmp_path, cfg)
    ref = wk.reference(tmp_path, cfg)
    lake = moto.new_lake()
    state = lake.uri.rsplit("/", 1)[0] + "/state"  # beside the lake, in its bucket
    pool = [wk.Worker(tmp_path, f"w{i}", cfg, cluster, lake, state) for i in range(4)]
    try:
        for w in pool[:3]:
            w.start()
        # Readings arrive while workers die: one second of 1,000 players at a time.
        join = wk.sender([cluster, ref], PLAYERS, pace_s=0.4)
        killed_owning = 0
        for round in range(ROUNDS):
            if round == ROUNDS // 2:
                pool[3].start()  # a fourth worker joins midway
            live = [w for w in pool if w.alive()]
            # Kill a worker while it runs tasks, when one does (the group may still be
            # moving the last victim's partitions).
            deadline = time.time() + 10
            owning = []
            while time.time() < deadline and not owning:
                owning = [w for w in live if running(w)]
                time.sleep(0.2)
            victim = rng.choice(owning or live)
            killed_owning += bool(owning)
            time.sleep(rng.uniform(0.3, 1.5))
            victim.kill9()
            victim.start()
        join()
        assert killed_owning >= ROUNDS // 2, f"only {killed_owning} of {ROUNDS} kills hit a worker running tasks"
        owners = wk.wait_stable(pool, PARTITIONS)
        assert len(set(owners.values())) == 4, f"every worker owns partitions: {owners}"
        for pipeline in ("heart_rate", "heartbeat_raw"):
            drained = []
            for w in pool:
                drained += [d["partition"] for d in w.drain(pipeline)["drained"]]
            assert sorted(drained) == list(range(PARTITIONS)), drained
            ref_r = requests.post(f"{ref.url}/v1/pipelines/{pipeline}/drain", timeout=300)
            assert ref_r.status_code == 200, ref_r.text
        wk.assert_same_tables(lake, ref.lake)

        # Every partition's offset is committed to the group, after its checkpoint: no lag.
        deadline = time.time() + 30
        while True:
            offsets = committed_offsets(cluster, "g")
            if sorted(offsets) == list(range(PARTITIONS)) and all(lag == 0 for _, lag in offsets.values()) or time.time() > deadline:
                break
            time.sleep(0.5)
        assert sorted(offsets) == list(range(PARTITIONS)) and all(lag == 0 for _, lag in offsets.values()), offsets
        assert sum(o for o, _ in offsets.values()) == PLAYERS * len(wk.SECONDS)

        # Partitions were taken over from their checkpoints in the state store.
        resumed = sum(w.log().count("task started") - w.log().count("resumed_from=None") for w in pool)
        assert resumed >= ROUNDS // 2, f"{resumed} tasks resumed from a checkpoint"
        # Every rebalance is in the logs and the metrics.
        for w in pool:
            assert "rebalance" in w.log(), w.name
            m = requests.get(w.url + "/metrics", timeout=10).text
            assert 'sluice_worker_rebalances_total{kind="assigned"}' in m, m[:2000]
            assert "sluice_worker_partitions " in m
    finally:
        for w in pool:
            w.stop()
        ref.stop()
        cluster.stop()


def manifests(state_dir):
    """Every task manifest in a local state store: (task, id, owner, committed_at_ms)."""
    out = []
    for f in sorted(state_dir.glob("tasks/*/manifests/*.json")):
        m = json.loads(f.read_text())
        out.append((f.parent.parent.name, m["id"], m["owner"], m["committed_at_ms"]))
    return out


def test_a_paused_worker_whose_partitions_moved_commits_nothing(tmp_path, moto):
    partitions = 4
    cfg = wk.config(tmp_path / "sluice.toml", partitions, session_timeout_ms=4000)
    cluster = wk.cluster(tmp_path, cfg)
    ref = wk.reference(tmp_path, cfg)
    lake = moto.new_lake()
    state = tmp_path / "state"  # a local state store: the test reads its manifests
    a = wk.Worker(tmp_path, "a", cfg, cluster, lake, str(state))
    b = wk.Worker(tmp_path, "b", cfg, cluster, lake, str(state))
    try:
        a.start()
        b.start()
        owners = wk.wait_stable([a, b], partitions)
        assert set(owners.values()) == {"a", "b"}, owners
        join = wk.sender([cluster, ref], 200, pace_s=0.25)
        time.sleep(3)
        a.signal(signal.SIGSTOP)
        paused_at = time.time() * 1000
        # The group gives a's partitions to b once a's session expires; b commits them.
        deadline = time.time() + 60
        while time.time() < deadline:
            st = b.status()
            if len(st["partitions"]) == partitions and all(p["pipelines"][0]["last_checkpoint_id"] > 0 for p in st["partitions"]):
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"b did not take over: {b.status()}")
        time.sleep(2)
        resumed_at = time.time() * 1000
        a.signal(signal.SIGCONT)
        join()
        # a's old tasks must not have committed anything since it was paused. (After it
        # resumes it may rejoin and get partitions anew: those tasks start from the state
        # store, with incarnations newer than the resume.)
        time.sleep(3)
        for task, id, owner, at in manifests(state):
            worker, incarnation = owner.split("/")
            started_ms = int(incarnation.split("-")[0])
            if worker == "a" and at >= paused_at:
                assert started_ms >= resumed_at, f"{task} checkpoint {id} was committed by a's task from before its pause"
        log = a.log()
        assert "kind=\"lost\"" in log or "kind=lost" in log or "fenced" in log, "a saw that it lost its partitions"
        owners = wk.wait_stable([a, b], partitions)
        # `sluice status` on a worker: its group, partitions, pipelines and checkpoints.
        out = subprocess.run([str(BIN), "status", "--server", b.url], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "worker b in group g" in out.stdout, out.stdout + out.stderr
        mine = [p for p, w in owners.items() if w == "b"]
        assert all(f"{TOPIC}-{p}" in out.stdout for p in mine) and "heart_rate" in out.stdout, out.stdout
        for pipeline in ("heart_rate", "heartbeat_raw"):
            for w in (a, b):
                w.drain(pipeline)
            assert requests.post(f"{ref.url}/v1/pipelines/{pipeline}/drain", timeout=300).status_code == 200
        wk.assert_same_tables(lake, ref.lake)
    finally:
        for w in (a, b):
            if w.alive():
                w.signal(signal.SIGCONT)
            w.stop()
        ref.stop()
        cluster.stop()
