"""Test helpers: free ports, running the CLI, finding our processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

RTML = str(Path(sys.executable).parent / "rtml")


def wait_for(cond, timeout: float, why=lambda: "") -> None:  # noqa: ANN001
    """Poll cond() until it is true; fail with why() after timeout seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"condition not met in {timeout:.0f}s {why()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess with its own state dir and free ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTML_")}
    env.update(
        {
            "RTML_STATE_DIR": str(state_dir),
            "RTML_PORTS__KAFKA": str(free_port()),
            "RTML_PORTS__MLFLOW": str(free_port()),
            "RTML_PORTS__PREFECT": str(free_port()),
            "RTML_METRICS__PORT": str(free_port()),  # the scoring job's /metrics
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
    )
    env.update(extra)
    return env


def rtml(
    *args: str, env: dict[str, str], timeout: float = 300, cwd: Path | None = None
) -> tuple[int, dict | None, str]:
    """Run `rtml ARGS --json`; return (exit code, parsed JSON or None, stderr)."""
    proc = subprocess.run([RTML, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return proc.returncode, (json.loads(lines[-1]) if lines else None), proc.stderr


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z":
            continue
        alive.append(pid)
    return alive


def _stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after the command name) of every readable process."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                yield int(d.name), (d / "stat").read_text().split(")")[-1].split()
            except OSError:
                continue


def spark_python_under(root: int) -> dict[int, str]:
    """pid -> module of every live Spark Python process (daemon or worker) under ``root``."""
    children: dict[int, list[int]] = {}
    for pid, fields in _stats():
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(pid)
    out, todo = {}, [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            todo.append(pid)
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            kinds = [a.decode() for a in argv if a.startswith((b"pyspark.sql.worker.", b"pyspark.worker"))]
            if kinds:
                out[pid] = kinds[0]
    return out


def flow_run_processes(flow_run_id: str) -> list[int]:
    """Every live process a Prefect runner started for flow_run_id (by its PREFECT__FLOW_RUN_ID)."""
    mark = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if mark in (d / "environ").read_bytes().split(b"\0"):
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def group_members(pgid: int) -> list[int]:
    """Every live process in process group pgid (the service and its children)."""
    return [pid for pid, fields in _stats() if int(fields[2]) == pgid and fields[0] != "Z"]


def scoped_settings(stack, tmp_path: Path, **extra):  # noqa: ANN001, ANN201
    """Settings on the session stack with this test's own topics, model name and state dir."""
    import uuid

    from rtml.infra.config.kafka_clients import connection_options, ensure_topics
    from rtml.infra.config.settings import load_settings

    uid = uuid.uuid4().hex[:8]
    overrides = {
        "state_dir": tmp_path / "state",
        "ports": stack.ports.model_dump(),
        "kafka": {
            "topics": {n: f"t{uid}.{n}" for n in ("events", "labels", "scores", "quarantine", "alerts")}
        },
        # an external tracking server / Prefect API of the stack (the cluster tier's) carries over
        "mlflow": {
            "model_name": f"fraud-{uid}",
            "experiment": f"exp-{uid}",
            "tracking_uri": stack.mlflow.tracking_uri,
        },
        "prefect": {"api_url": stack.prefect.api_url},
        "metrics": {"port": free_port()},  # the scoring job's /metrics, never another test's
        **extra,
    }
    settings = load_settings(use_default_file=False, overrides=overrides)
    ensure_topics(connection_options(settings), settings.kafka.topics.all(), settings.kafka.partitions)
    return settings


def settings_env(settings) -> dict[str, str]:  # noqa: ANN001
    """RTML_* environment reproducing these settings for a CLI subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTML_")}
    env["RTML_STATE_DIR"] = str(settings.state_dir)
    for name, port in settings.ports.model_dump().items():
        env[f"RTML_PORTS__{name.upper()}"] = str(port)
    for name, topic in settings.kafka.topics.model_dump().items():
        env[f"RTML_KAFKA__TOPICS__{name.upper()}"] = topic
    for name, value in settings.spark.model_dump(exclude_defaults=True, mode="json").items():
        env[f"RTML_SPARK__{name.upper()}"] = str(value)
    env["RTML_MLFLOW__MODEL_NAME"] = settings.mlflow.model_name
    env["RTML_METRICS__PORT"] = str(settings.metrics.port)
    env["RTML_MLFLOW__EXPERIMENT"] = settings.mlflow.experiment
    if settings.mlflow.tracking_uri:
        env["RTML_MLFLOW__TRACKING_URI"] = settings.mlflow.tracking_uri
    if settings.prefect.api_url:
        env["RTML_PREFECT__API_URL"] = settings.prefect.api_url
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    return env


def read_topic(settings, topic: str) -> list:  # noqa: ANN001
    """Every record of a topic, from the beginning to its true end.

    Robust to a loaded machine: waits for the topic's full partition metadata, and after reaching the
    probed end keeps reading until the topic stays quiet (an end reported short only delays the stop).
    """
    import time

    from kafka import TopicPartition

    from rtml.infra.config.kafka_clients import connection_options, make_consumer
    from rtml.pipelines.kafka_source import true_end_offsets

    consumer = make_consumer(connection_options(settings))
    try:
        deadline = time.monotonic() + 15
        parts = consumer.partitions_for_topic(topic) or set()
        while len(parts) < settings.kafka.partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = true_end_offsets(consumer, tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out, quiet = [], 0
        for _ in range(2000):
            got = 0
            for recs in consumer.poll(timeout_ms=300, max_records=50_000).values():
                out.extend(recs)
                got += len(recs)
            quiet = 0 if got else quiet + 1
            if quiet >= 3 and all(consumer.position(tp) >= ends[tp] for tp in tps):
                break
        return out
    finally:
        consumer.close()


def valid_and_malformed(settings) -> tuple[dict[str, tuple[int, int]], dict[tuple[int, int], str]]:  # noqa: ANN001
    """From the events topic: valid event id -> (partition, offset); (partition, offset) -> malformed kind."""
    import json as _json

    from rtml.infra.config.spec import load_spec
    from rtml.pipelines.producer import KIND_HEADER

    spec = load_spec(settings.spec)
    valid, bad = {}, {}
    for r in read_topic(settings, settings.kafka.topics.events):
        kind = dict(r.headers or []).get(KIND_HEADER)
        if kind:
            bad[(r.partition, r.offset)] = kind.decode()
        else:
            valid[_json.loads(r.value)[spec.event_id]] = (r.partition, r.offset)
    return valid, bad


def sink_frame(settings, kind: str = "scores"):  # noqa: ANN001, ANN201
    """A whole sink table (Delta), in batch order; empty if it has not been written."""
    from rtml.pipelines.tables import read_table

    return read_table(settings, kind)


def overrides_of(settings) -> dict:  # noqa: ANN001
    """Non-default settings as JSON-able overrides (e.g. flow parameters); tests hold no secrets."""
    return settings.model_dump(mode="json", exclude_defaults=True)


def afternoon_ms() -> int:
    """A whole hour between 10:00 and 20:00 UTC at most 14 h ago, in epoch ms: the latest such hour
    (``PYTEST_RTML_ANCHOR_MS`` overrides).

    The generator's fraud prefers the night before its drift and ``hour`` is a model feature, so a
    test whose outcome depends on how a model trained on generated history scores generated events
    places both at one time of day (a history of a few hours before the anchor stays after 06:00)
    instead of the hour the suite happens to run at. Windows on event time (``drift.performance_window``,
    1 day) still hold data placed at the anchor."""
    import time as _time

    forced = os.environ.get("PYTEST_RTML_ANCHOR_MS")
    if forced:
        return int(forced)
    hour = 3_600_000
    now = int(_time.time() * 1000)
    at = now - now % hour
    midnight = now - now % 86_400_000
    if at >= midnight + 20 * hour:
        return midnight + 20 * hour
    if at < midnight + 10 * hour:
        return midnight - 4 * hour  # yesterday 20:00
    return at


def labelled_batch(n: int, seed: int, start_ms: int | None = None, drift_at: int | None = None):  # noqa: ANN201
    """Generated labelled events as a user's batch file would hold them: event fields + label."""
    import time as _time

    from rtml.infra.config.spec import load_spec
    from rtml.pipelines.generator import CardTransactionGenerator, to_event_frame

    spec = load_spec()
    gen = CardTransactionGenerator(seed=seed, drift_at=drift_at)
    gen.start_ms = start_ms if start_ms is not None else int(_time.time() * 1000) - 3_600_000
    frame = gen.batch(n)
    return to_event_frame(frame, spec).assign(is_fraud=frame["is_fraud"].to_numpy())


def poison(frame, kind: str, seed: int = 0):  # noqa: ANN001, ANN201
    """The poisoned batches of the data-quality issue; returns a new frame."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    out = frame.copy()
    n = len(out)
    pick = rng.random(n)
    if kind == "label_flips":
        flip = pick < 0.5
        out.loc[flip, "is_fraud"] = 1 - out.loc[flip, "is_fraud"]
    elif kind == "nulls":
        out.loc[pick < 0.3, "amount"] = np.nan
    elif kind == "amount_x1000":
        out["amount"] = out["amount"] * 1000
    elif kind == "duplicate_ids":
        dup = np.flatnonzero(pick < 0.2)
        out.loc[dup, "transaction_id"] = out["transaction_id"].iloc[(dup + 1) % n].to_numpy()
    elif kind == "stale_times":
        ts = pd.to_datetime(out["event_time"], utc=True) - pd.Timedelta(days=60)
        out["event_time"] = ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    elif kind == "wrong_types":
        out["amount"] = out["amount"].map(lambda v: f"{v:.2f} EUR")
    else:
        raise ValueError(kind)
    return out


# poison -> the expectation that must name it
POISONS = {
    "label_flips": "expect_column_mean_to_be_between(is_fraud)",
    "nulls": "expect_column_values_to_not_be_null(amount)",
    "amount_x1000": "expect_column_median_to_be_between(amount)",
    "duplicate_ids": "expect_column_values_to_be_unique(transaction_id)",
    "stale_times": "expect_column_values_to_be_between(_event_ms)",
    "wrong_types": "expect_column_values_to_be_in_type_list(amount)",
}
