"""Cluster benchmark: events/s scored with 1 and with 2 Spark standalone workers, side by side. JSON.

``rtml up --profile cluster`` (2 workers x 1 core) on a temporary state dir, one champion
(``rtml bootstrap``), one events topic (``--events`` events, 2% malformed, 2 partitions). Each run
scores the whole topic from the start (``rtml score --available-now``) with its own checkpoint,
sink and Delta tables (in the profile's object store) and 2 shuffle partitions. "1 worker" caps
the application at one executor core (``spark.cores.max=1``: one executor on one worker);
"2 workers" lets it take both. The runs alternate (1, 2, 1, 2, ...). Rate = events of the
micro-batches after the first (which loads the model on fresh Python workers) over their time.
Then, unless ``--no-recovery``: a streaming ``rtml score`` is SIGKILLed after two batches and
restarted; the time from the kill to the restarted job's first batch and to caught up, and
read == events at the end.

    python benchmarks/cluster.py [--events 20000] [--batch 2500] [--repeats 2] [--no-recovery]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RTML = str(Path(sys.executable).parent / "rtml")
SHIM = Path(__file__).resolve().parents[1] / ".shim"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str, env: dict[str, str], timeout: float = 900) -> dict:
    proc = subprocess.run([RTML, *args, "--json"], env=env, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"rtml {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def _batches(sink: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((sink / "_batches").glob("*.json"))]


def _rate(batches: list[dict]) -> tuple[float, int]:
    b = sorted(batches, key=lambda r: r["ended_at_ms"])
    seconds = (b[-1]["ended_at_ms"] - b[0]["ended_at_ms"]) / 1000
    return round(sum(r["read"] for r in b[1:]) / seconds, 1), len(b)


def _run_env(env: dict[str, str], root: Path, name: str, cores_max: int | None) -> dict[str, str]:
    out = env | {
        "RTML_SPARK__CHECKPOINT_ROOT": str(root / name / "checkpoints"),
        "RTML_SPARK__SINK_ROOT": str(root / name / "sink"),
        "RTML_SPARK__TABLE_ROOT": f"s3://rtml/{name}",  # the profile's object store, a table per run
        "RTML_METRICS__PORT": str(_free_port()),
    }
    if cores_max:
        out["RTML_SPARK__CONF"] = json.dumps({"spark.cores.max": str(cores_max)})
    return out


def _score_once(env: dict[str, str], root: Path, name: str, workers: int, events: int) -> dict:
    run_env = _run_env(env, root, name, 1 if workers == 1 else None)
    executors = root / "state" / "cluster"  # worker<i>/<app id>/<executor id>: one per executor
    before = set(executors.glob("worker*/app-*/*"))
    t0 = time.monotonic()
    summary = _cli("score", "--available-now", env=run_env)
    wall = time.monotonic() - t0
    ran = set(executors.glob("worker*/app-*/*")) - before
    batches = _batches(Path(run_env["RTML_SPARK__SINK_ROOT"]))
    rate, n = _rate(batches)
    assert sum(b["read"] for b in batches) == events == summary["read"], (summary, events)
    return {
        "workers": workers,
        "executors_on_workers": sorted(p.parts[-3] for p in ran),
        "events_per_s": rate,
        "batches": n,
        "first_batch_s": sorted(batches, key=lambda r: r["ended_at_ms"])[0]["seconds"],
        "wall_s": round(wall, 1),
        "scored": summary["scored"],
        "quarantined": summary["quarantined"],
    }


def _recovery(env: dict[str, str], root: Path, events: int) -> dict:
    run_env = _run_env(env, root, "recovery", None)
    sink = Path(run_env["RTML_SPARK__SINK_ROOT"])
    logs = [open(root / f"recovery{i}.log", "w") for i in (1, 2)]  # noqa: SIM115
    first = subprocess.Popen(
        [RTML, "score"], env=run_env, stdout=logs[0], stderr=logs[0], start_new_session=True
    )
    _wait(lambda: len(_batches(sink)) >= 2, 300, "first job: 2 batches")
    os.killpg(first.pid, signal.SIGKILL)  # the CLI and its JVM
    t_kill = time.time()
    first.wait()
    seen = {b["batch_id"] for b in _batches(sink)}
    second = subprocess.Popen(
        [RTML, "score"], env=run_env, stdout=logs[1], stderr=logs[1], start_new_session=True
    )
    try:
        _wait(lambda: any(b["batch_id"] not in seen for b in _batches(sink)), 300, "restart: a batch")
        t_first = time.time()
        _wait(lambda: sum(b["read"] for b in _batches(sink)) >= events, 300, "restart: caught up")
        t_done = time.time()
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=120)
    read = sum(b["read"] for b in _batches(sink))  # one record per batch id: a replay overwrites
    return {
        "kill_to_first_batch_s": round(t_first - t_kill, 1),
        "kill_to_caught_up_s": round(t_done - t_kill, 1),
        "read_total": read,
        "read_equals_events": read == events,
    }


def _wait(cond, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=2_500, help="spark.max_events_per_trigger")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-recovery", dest="recovery", action="store_false")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rtml-bench-cluster-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RTML_", "SPARK_", "PYSPARK_"))}
    pythonpath = [str(SHIM), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env |= {
        "RTML_STATE_DIR": str(root / "state"),
        "RTML_SPARK__MAX_EVENTS_PER_TRIGGER": str(args.batch),
        "RTML_SPARK__SHUFFLE_PARTITIONS": "2",  # one per executor core at most; same in every run
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(pythonpath)),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    t0 = time.monotonic()
    _cli("up", "--profile", "cluster", env=env)
    try:
        up_s = round(time.monotonic() - t0, 1)
        champion = _cli("bootstrap", "--n", "8000", env=env)["champion"]
        gen = ("--n", str(args.events), "--seed", "51", "--malformed-rate", "0.02")
        produced = _cli("produce", *gen, env=env)
        runs = []
        for i in range(args.repeats):
            for workers in (1, 2):
                runs.append(_score_once(env, root, f"w{workers}-{i}", workers, args.events))
        result = {
            "benchmark": "cluster",
            "events": args.events,
            "produced": produced["events"],
            "malformed": produced["malformed_total"],
            "max_events_per_trigger": args.batch,
            "champion": champion,
            "up_s": up_s,
            "worker_cores": 1,
            "shuffle_partitions": 2,
            "runs": runs,
        }
        for workers in (1, 2):
            rates = [r["events_per_s"] for r in runs if r["workers"] == workers]
            result[f"events_per_s_median_{workers}w"] = round(statistics.median(rates), 1)
        result["speedup_2w_over_1w"] = round(
            result["events_per_s_median_2w"] / result["events_per_s_median_1w"], 2
        )
        if args.recovery:
            result["recovery"] = _recovery(env, root, args.events)
        print(json.dumps(result))
    finally:
        _cli("down", env=env, timeout=300)


if __name__ == "__main__":
    main()
