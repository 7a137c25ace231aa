"""Executors write, the driver commits: the scoring job on a Spark standalone master (2 workers,
1 core each, started here from the pyspark wheel) with the session's broker and MLflow.

The tasks write the Delta data files, the driver commits them once per table per batch and sends
Kafka output from the committed files in bounded slices: every batch record says ``sink=executors``
and that the driver held at most a few metadata rows, never a micro-batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from rtml.flows.bootstrap import bootstrap
from rtml.infra.config.spec import load_spec
from rtml.pipelines.producer import KIND_HEADER, generated_frames, stream_frames
from rtml.pipelines.scoring import read_batch_records
from rtml.pipelines.tables import open_table
from tests.helpers import RTML, free_port, read_topic, scoped_settings, settings_env, sink_frame, wait_for

pytestmark = pytest.mark.integration

SHIM = str(Path(__file__).resolve().parents[2] / ".shim")
SLICE = 400


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """spark://127.0.0.1:P with 2 workers of 1 core; stopped (process groups) on teardown."""
    import pyspark

    root = tmp_path_factory.mktemp("standalone")
    spark_class = str(Path(pyspark.__file__).parent / "bin" / "spark-class")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RTML_", "SPARK_", "PYSPARK_"))}
    env |= {"PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": SHIM}
    port, ui = free_port(), free_port()
    master = f"spark://127.0.0.1:{port}"
    deploy = "org.apache.spark.deploy"
    cmds = [
        [
            spark_class,
            f"{deploy}.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        ]
    ]
    for i in (1, 2):
        (root / f"w{i}").mkdir()
        worker = [spark_class, f"{deploy}.worker.Worker", master, "--host", "127.0.0.1", "--cores", "1"]
        worker += ["--memory", "1g", "--webui-port", str(free_port()), "--work-dir", str(root / f"w{i}")]
        cmds.append(worker)
    procs = []
    try:
        for i, cmd in enumerate(cmds):
            log = open(root / f"daemon{i}.log", "w")  # noqa: SIM115
            procs.append(
                subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True, close_fds=True)
            )

        def alive() -> int:
            try:
                state = requests.get(f"http://127.0.0.1:{ui}/json/", timeout=2).json()
            except (requests.RequestException, ValueError):
                return 0
            return sum(w["state"] == "ALIVE" for w in state["workers"])

        wait_for(lambda: alive() == 2, 120, lambda: (root / "daemon0.log").read_text()[-2000:])
        yield master
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, signal.SIGKILL)


def test_tasks_write_driver_commits_and_never_holds_a_batch(stack, standalone: str, tmp_path: Path) -> None:
    s = scoped_settings(
        stack,
        tmp_path,
        spark={"master": standalone, "max_events_per_trigger": 1500, "outbox_slice_rows": SLICE},
    )
    spec = load_spec()
    assert bootstrap(s, spec, n=6000)["champion"] == "1"
    frames = list(generated_frames(spec, 3000, 61, None, 1000))
    frames.append(frames[0].iloc[:150])  # producer retries: the same events again
    produced = stream_frames(s, spec, iter(frames), malformed_rate=0.03, seed=61)
    assert produced["events"] == 3150 and produced["malformed_total"] > 30

    env = settings_env(s) | {"PYTHONPATH": SHIM}
    out = subprocess.run(
        [RTML, "score", "--available-now", "--json"], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]

    records = read_topic(s, s.kafka.topics.events)
    bad = {(r.partition, r.offset) for r in records if dict(r.headers or []).get(KIND_HEADER)}
    valid = [json.loads(r.value)[spec.event_id] for r in records if (r.partition, r.offset) not in bad]
    batches = read_batch_records(s)
    assert len(batches) >= 2 and {b["sink"] for b in batches} == {"executors"}
    read = sum(b["read"] for b in batches)
    assert read == 3150 == sum(b["scored"] + b["quarantined"] + b["duplicates"] for b in batches)
    assert sum(b["quarantined"] for b in batches) == len(bad)
    assert sum(b["scored"] for b in batches) == len(set(valid))
    assert sum(b["duplicates"] for b in batches) == len(valid) - len(set(valid)) > 0
    # the driver held metadata rows (a few per task), never a micro-batch
    assert all(b["driver_rows_max"] <= 20 < b["read"] for b in batches), batches
    assert all(b["latency_ms_p50"] <= b["latency_ms_p99"] for b in batches)

    scores, quarantine = sink_frame(s, "scores"), sink_frame(s, "quarantine")
    assert scores[spec.event_id].is_unique and set(scores[spec.event_id]) == set(valid)
    assert len(quarantine) == len(bad) + len(valid) - len(set(valid))  # duplicates are kept there too
    on_topic = read_topic(s, s.kafka.topics.scores)
    keys = pd.Series([r.key.decode() for r in on_topic])
    assert keys.is_unique and set(keys) == set(valid)
    assert len(read_topic(s, s.kafka.topics.quarantine)) == len(quarantine)
    # one Delta commit per batch per table (plus none for replays): versions = batches - 1
    assert open_table(s, "scores").version() == len(batches) - 1
    summary = json.loads(out.stdout)
    assert summary["sinks"] == ["executors"] and summary["driver_rows_max"] <= 20
    assert 0 < summary["outbox_slice_max"] <= SLICE  # Kafka output left in bounded slices


def test_task_files_on_the_object_store(tmp_path: Path) -> None:
    """The tasks' writer and the driver's commit on S3 (SeaweedFS), with delta-rs's storage options."""
    import secrets

    import numpy as np
    import pyarrow as pa

    from rtml.infra.app.objectstore import start_object_store
    from rtml.infra.config.settings import load_settings
    from rtml.pipelines.executor_sink import TABLES, committed_files, gather, read_slices, task_writer
    from rtml.pipelines.scorer import score_arrow_schema
    from rtml.pipelines.tables import commit_files, read_table, table_uri

    store = start_object_store(
        tmp_path / "store", bucket="rtml-exec", access_key="rtml-e2e", secret_key=secrets.token_hex(20)
    )
    try:
        opts = store.storage_options()
        s = load_settings(
            use_default_file=False,
            overrides={
                "state_dir": tmp_path / "state",
                "spark": {"table_root": "s3://rtml-exec/x", "storage_options": opts},
            },
        )
        spec = load_spec()
        schema = score_arrow_schema(spec)
        n = 1200
        cols = {f.name: pa.nulls(n, f.type) for f in schema}
        cols |= {
            spec.event_id: pa.array([f"e{i}" for i in range(n)]),
            "_event_ms": pa.array(1_764_000_000_000 + np.arange(n) * 60_000),
            "_reason": pa.array([None if i % 10 else "unparseable_json" for i in range(n)], pa.string()),
            "value": pa.array([None if i % 10 else b"{" for i in range(n)], pa.binary()),
            "latency_ms": pa.array(np.arange(n) % 500),
            "score": pa.array(np.linspace(0, 1, n)),
        }
        table = pa.table(cols).cast(schema)
        write = task_writer({t: table_uri(s, t) for t in TABLES}, opts, spec, s.scoring, 7)
        files = gather(pa.Table.from_batches(list(write(iter(table.to_batches(500))))))
        for name, batch_files in files.files.items():
            assert commit_files(s, name, batch_files, files.schemas[name], f"app-{name}", 7)
            assert not commit_files(s, name, batch_files, files.schemas[name], f"app-{name}", 7)
        scores = read_table(s, "scores")
        assert len(scores) == files.counts["scored"] == 1080 and scores[spec.event_id].is_unique
        assert len(read_table(s, "quarantine")) == 120 and not list(tmp_path.rglob("*.parquet"))
        paths = committed_files(s, 7)["scores"]
        back = list(read_slices(table_uri(s, "scores"), opts, paths, 300))
        assert max(t.num_rows for t in back) <= 300 and sum(t.num_rows for t in back) == 1080
    finally:
        store.stop()
