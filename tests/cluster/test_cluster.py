"""The scoring loop on a Spark standalone cluster (master + 2 workers) with MLflow, Prefect and the
per-entity state on PostgreSQL: executors run the tasks, a SIGKILLed driver loses and duplicates
nothing, the lifecycle works against the external servers, and spark-submit's flags reach the job."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from rtml.flows.bootstrap import bootstrap
from rtml.infra.config.spec import load_spec
from rtml.models.lifecycle.aliases import audit_trail
from rtml.models.lifecycle.registry import CHAMPION, alias_version
from rtml.pipelines.producer import generated_frames, stream_frames
from rtml.pipelines.scoring import read_batch_records
from tests.helpers import RTML, rtml, scoped_settings, settings_env, sink_frame, valid_and_malformed, wait_for

pytestmark = pytest.mark.cluster

APP = "rtml-scoring"
SUBMITTED = "score_job.py"  # spark-submit names the app after the script: the launcher's name wins


def _produce(s, n: int, seed: int, **kw) -> dict:  # noqa: ANN001
    spec = load_spec()
    return stream_frames(s, spec, generated_frames(spec, n, seed, None, 1000), seed=seed, **kw)


def _apps(cluster, kind: str, name: str = APP) -> list[dict]:  # noqa: ANN001
    return [a for a in cluster.state()[kind] if a["name"] == name]


def _steady_rate(jobs: list[list[dict]]) -> float:
    """Events/s over each job's micro-batches after its first, from the batches' end times."""
    jobs = [sorted(job, key=lambda b: b["ended_at_ms"]) for job in jobs]
    events = sum(b["read"] for job in jobs for b in job[1:])
    seconds = sum((job[-1]["ended_at_ms"] - job[0]["ended_at_ms"]) / 1000 for job in jobs if len(job) > 1)
    return round(events / seconds, 1)


def _tasks_per_worker(cluster, app_id: str) -> list[int]:  # noqa: ANN001
    """Tasks each worker's executors finished for the app (their stderr, under the worker's work dir)."""
    return [
        sum(
            f.read_text(errors="replace").count("Finished task")
            for f in cluster.root.glob(f"worker{i}/{app_id}/*/stderr")
        )
        for i in (1, 2)
    ]


@pytest.fixture
def groups() -> Iterator[list[subprocess.Popen]]:
    """Process groups the test started, SIGKILLed at teardown while their leader was not reaped: a
    failed assertion must not leave a driver holding the cluster's cores (the next test's application
    would wait for them). A reaped leader's pid may belong to another process by then: left alone."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:  # not reaped: its pid, and so its group id, is still its own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_score_on_executors_survive_sigkill_then_lifecycle_on_postgres(
    cluster, tmp_path: Path, groups: list[subprocess.Popen]
) -> None:
    # the tables (scores, quarantine, labels, labelled) on the profile's S3-compatible object store;
    # its keys reach the CLI only through the environment (settings_env masks secrets)
    store = {k: v.get_secret_value() for k, v in cluster.settings.spark.storage_options.items()}
    root = f"{cluster.settings.spark.table_root}/{tmp_path.name}"
    assert root.startswith("s3://") and store["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    s = scoped_settings(
        cluster.settings,
        tmp_path,
        spark={
            "master": cluster.master_url,
            "max_events_per_trigger": 2500,
            "table_root": root,
            "storage_options": store,
        },
        # per-entity state in the profile's PostgreSQL (auto picks it on a cluster when it is set)
        scoring={"state_url": cluster.settings.scoring.state_url.get_secret_value()},
    )
    spec = load_spec()
    assert bootstrap(s, spec, n=8000)["champion"] == "1"  # registered in the PostgreSQL-backed MLflow
    env = {**settings_env(s), "RTML_SPARK__STORAGE_OPTIONS": json.dumps(store)}
    env["RTML_SCORING__STATE_URL"] = s.scoring.state_url.get_secret_value()
    produced = _produce(s, 8000, seed=51, malformed_rate=0.02)
    completed_before = len(_apps(cluster, "completedapps"))
    log_path = tmp_path / "score.log"
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen([RTML, "score"], env=env, start_new_session=True, stdout=log, stderr=log)
    groups.append(proc)
    batches = s.sink_root / "_batches"

    def n_batches() -> int:
        return len(list(batches.glob("*.json")))

    why = lambda: log_path.read_text()[-3000:]  # noqa: E731
    wait_for(lambda: n_batches() >= 1, 240, why)
    running = _apps(cluster, "activeapps")  # the master's JSON: this driver's app holds both executors
    assert len(running) == 1 and running[0]["cores"] == 2, running
    assert cluster.state()["coresused"] == 2
    feeder_out: dict = {}
    feeder = threading.Thread(  # 60 s of events: the backlog's 4 micro-batches took over 20 s here
        target=lambda: feeder_out.update(_produce(s, 12_000, 52, malformed_rate=0.02, rate=200))
    )
    feeder.start()
    wait_for(lambda: n_batches() >= 4, 180, why)
    assert feeder.is_alive(), "the kill should land while events are still arriving"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    subprocess.run(["pkill", "-9", "-g", str(proc.pid)], check=False)  # its JVM, same process group
    t_kill = time.time()

    # restart at once, while events still arrive; it catches up, then a SIGTERM stops it cleanly
    log2_path = tmp_path / "score2.log"
    log2 = open(log2_path, "w")  # noqa: SIM115
    proc2 = subprocess.Popen(
        [RTML, "score", "--json"], env=env, start_new_session=True, stdout=log2, stderr=log2
    )
    groups.append(proc2)
    seen = {p.name for p in batches.glob("*.json")}
    why2 = lambda: log2_path.read_text()[-3000:]  # noqa: E731
    wait_for(lambda: any(p.name not in seen for p in batches.glob("*.json")), 240, why2)
    t_first = time.time()
    feeder.join()
    wait_for(lambda: sum(b["read"] for b in read_batch_records(s)) >= 20_000, 240, why2)
    t_caught_up = time.time()
    restarted = [b for b in read_batch_records(s) if b["ended_at_ms"] > t_kill * 1000]
    active = _apps(cluster, "activeapps")
    assert [a["cores"] for a in active] == [2], active  # the restarted driver has both executors too
    proc2.send_signal(signal.SIGTERM)
    assert proc2.wait(timeout=120) == 0, why2()
    # the killed app and the restarted one, both ended (the master learns of a driver's exit in seconds)
    wait_for(
        lambda: len(_apps(cluster, "completedapps")) - completed_before == 2, 60, lambda: str(cluster.state())
    )
    completed = _apps(cluster, "completedapps")
    for app in completed[completed_before:]:  # tasks ran on the executors of both workers
        assert min(_tasks_per_worker(cluster, app["id"])) > 0, (app, _tasks_per_worker(cluster, app["id"]))

    valid, bad = valid_and_malformed(s)
    assert len(valid) + len(bad) == 20_000 == produced["events"] + feeder_out["events"]
    scores, quarantine = sink_frame(s, "scores"), sink_frame(s, "quarantine")
    assert scores[spec.event_id].is_unique, "duplicated events after the SIGKILL"
    assert set(scores[spec.event_id]) == set(valid), "events lost after the SIGKILL"
    assert len(quarantine) == len(bad) and len(bad) > 0
    assert set(zip(quarantine["partition"], quarantine["offset"], strict=True)) == set(bad)
    assert not list(tmp_path.rglob("_delta_log")), "tables written to local disk, not the object store"
    records = read_batch_records(s)  # one record per batch id: a replayed batch overwrote its own
    assert sum(b["read"] for b in records) == 20_000 == len(scores) + len(quarantine)
    # the entity state is in PostgreSQL, one row per card that was scored, across the kill
    checkpoint = s.checkpoint_root / "scoring"
    assert not (checkpoint / "state").exists() and not (checkpoint / "entity_state").exists()
    with psycopg.connect(s.scoring.state_url.get_secret_value()) as con:
        table = sql.Identifier((checkpoint / "entity_state_postgres").read_text().strip())
        [(entities, buckets)] = con.execute(
            sql.SQL("SELECT count(*), count(DISTINCT bucket) FROM {}").format(table)
        )
    assert entities == scores[spec.entity_key].nunique() and buckets > 1

    first_job = [b for b in records if b["ended_at_ms"] < t_kill * 1000]
    figures = {
        "events": 20_000,
        "scored": len(scores),
        "quarantined": len(quarantine),
        "workers": 2,
        "executor_cores": 2,
        "max_events_per_trigger": s.spark.max_events_per_trigger,
        "read_before_kill": sum(b["read"] for b in first_job),
        "read_after_restart": sum(b["read"] for b in restarted),
        # micro-batches after each job's first (its first one loads the model on fresh Python workers)
        "throughput_events_per_s": _steady_rate([first_job, restarted]),
        "first_batch_s": [first_job[0]["seconds"], restarted[0]["seconds"]],
        "recover_s_kill_to_first_batch": round(t_first - t_kill, 1),
        "recover_s_kill_to_caught_up": round(t_caught_up - t_kill, 1),
    }
    print("CLUSTER_FIGURES " + json.dumps(figures))

    # retrain -> promote -> rollback, through the CLI, against the PostgreSQL-backed servers
    code, out, err = rtml("retrain", "--json", env=env, timeout=600)
    assert code == 0, err[-3000:]
    assert out["challenger"] == "2" and out["outcome"] in {"promote", "reject", "no_decision"}, out
    champion = alias_version(s, CHAMPION)
    other = "1" if champion == "2" else "2"
    code, out, err = rtml("promote", other, "--reason", "cluster tier: manual promotion", "--json", env=env)
    assert code == 0 and out["champion"] == other, err[-2000:]
    assert alias_version(s, CHAMPION) == other
    code, out, err = rtml("rollback", "--reason", "cluster tier: rollback", "--json", env=env)
    assert code == 0 and out["champion"] == champion, err[-2000:]
    assert alias_version(s, CHAMPION) == champion
    assert audit_trail(s, champion)[-1]["kind"] == "rollback"
    assert any(r["kind"] == "manual" and "manual promotion" in r["reason"] for r in audit_trail(s, other))


def test_spark_submit_flags_reach_the_job_on_the_cluster(cluster, tmp_path: Path) -> None:
    import pyspark

    s = scoped_settings(cluster.settings, tmp_path, spark={"master": "local[1]", "shuffle_partitions": 5})
    spec = load_spec()
    bootstrap(s, spec, n=4000)
    _produce(s, 2000, seed=61, malformed_rate=0.02)
    env = settings_env(s) | {"PYSPARK_PYTHON": sys.executable}
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    job = Path(__file__).resolve().parents[2] / "pipelines" / "score_job.py"
    completed_before = len(_apps(cluster, "completedapps", SUBMITTED))
    cmd = [str(submit), "--master", cluster.master_url, "--conf", "spark.sql.shuffle.partitions=2"]
    out = subprocess.run(
        [*cmd, str(job), "--available-now"], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
    assert summary["read"] == 2000 == summary["scored"] + summary["quarantined"]
    # the master ran it (not RTML_SPARK__MASTER's local[1]) with both executors
    wait_for(
        lambda: len(_apps(cluster, "completedapps", SUBMITTED)) == completed_before + 1,
        60,
        lambda: str(cluster.state()),
    )
    apps = _apps(cluster, "completedapps", SUBMITTED)
    assert min(_tasks_per_worker(cluster, apps[-1]["id"])) > 0  # both workers' executors ran tasks
    # the job's own records: the offset log holds the session's shuffle partitions, and the state
    # store has exactly one directory per shuffle partition (2, not the setting's 5)
    offsets = sorted((s.checkpoint_root).rglob("offsets/0"))
    assert offsets, list(s.checkpoint_root.rglob("*"))[:20]
    conf = json.loads(offsets[0].read_text().splitlines()[1])["conf"]
    assert conf["spark.sql.shuffle.partitions"] == "2"
    ops = [d / "0" for d in s.checkpoint_root.rglob("state") if (d / "0").is_dir()]
    parts = {p.name for op in ops for p in op.iterdir() if p.is_dir() and p.name.isdigit()}
    assert parts == {"0", "1"}, parts
