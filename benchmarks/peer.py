"""Phase (p) of benchmarks/scoring.py: rtml next to the same job written for Quix Streams.

The peer app (benchmarks/peer_quix.py) runs in its own virtualenv, ``.venv-peer/`` at the repository
root (git-ignored; created once with ``python -m venv`` and ``pip install quixstreams==3.28.1``):
quixstreams pins confluent-kafka < 2.13 and rtml 2.16, so it never enters rtml's environment. The
main process exports what the peer needs to a JSON file: the spec's validation rules and windows and
the champion's scaler, coefficients and threshold (:func:`export_champion`). Only the SGD logistic
family is exported: the peer scores it with plain floats, no scikit-learn call per event.

Also here: :class:`TreeRss`, the peak resident memory of a process tree sampled from /proc (the sum
over the processes of one session: rtml's driver, its JVM and Python workers; not the broker, MLflow
or Prefect, which the stack starts in sessions of their own).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rtml.features.featurise import longest_window_ms
from rtml.infra.config.kafka_clients import connection_options, ensure_topics
from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec, parse_duration_seconds
from rtml.models.lifecycle.registry import alias_version, load_model
from rtml.pipelines.tables import read_table

REPO = Path(__file__).resolve().parents[1]
PEER_VENV = REPO / ".venv-peer"
PEER_REQUIREMENTS = ["quixstreams==3.28.1"]
PEER_APP = Path(__file__).resolve().parent / "peer_quix.py"
PEER_TOPICS = ("bench.peer.scores", "bench.peer.quarantine")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def ensure_peer_venv(venv: Path = PEER_VENV) -> Path:
    """The peer's interpreter: the virtualenv is created once and reused while its requirements hold."""
    marker = venv / ".rtml-peer-requirements"
    python = venv / "bin" / "python"
    wanted = "\n".join(PEER_REQUIREMENTS)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *PEER_REQUIREMENTS], check=True, stdout=sys.stderr
    )
    marker.write_text(wanted)
    return python


def export_champion(settings: Settings, spec: StreamSpec, path: Path) -> dict[str, Any]:
    """The champion's parameters and the spec's rules, as JSON for the peer (floats round-trip exactly)."""
    version = alias_version(settings)
    learner = load_model(settings.tracking_uri, settings.mlflow.model_name, version).learner
    if learner.family != "sgd_logistic":
        raise SystemExit(f"(p) exports the sgd_logistic family only; the champion is {learner.family}")
    if settings.scoring.pseudonymise_entities:
        raise SystemExit("(p) does not pseudonymise entities: run it with scoring.pseudonymise_entities off")
    enc = learner.encoder
    agg = spec.aggregates
    rules = {
        "event_id": spec.event_id,
        "event_time": spec.event_time,
        "event_time_format": spec.event_time_format,
        "event_time_type": spec.event_time_type,
        "entity_key": spec.entity_key,
        "features": [
            {
                "name": f.name,
                "type": f.type,
                "required": f.required,
                "min": f.min,
                "max": f.max,
                "categories": f.categories,
                "on_unknown": f.on_unknown,
            }
            for f in spec.features
        ],
        "extra_fields": spec.extra_fields,
        "max_future_seconds": spec.max_future_seconds,
        "max_event_bytes": settings.scoring.max_event_bytes,
        "windows": [[w, parse_duration_seconds(w) * 1000] for w in (agg.windows if agg else [])],
        "sum_of": agg.sum_of if agg else None,
        "time_features": spec.time_features,
        "aggregate_names": spec.aggregate_names,
        # rtml's horizon: ids kept as long as the longest window or the horizon, whichever is longer
        "dedup_horizon_ms": (
            max(settings.scoring.dedup_horizon_seconds * 1000, longest_window_ms(spec))
            if settings.scoring.dedup_horizon_seconds
            else 0
        ),
        "events_topic": settings.kafka.topics.events,
        "scores_topic": PEER_TOPICS[0],
        "quarantine_topic": PEER_TOPICS[1],
    }
    out = {
        "version": version,
        "family": learner.family,
        "numeric": list(enc.numeric),
        "mean": enc.scaler.mean_.tolist(),
        "scale": enc.scaler.scale_.tolist(),
        "categories": {k: list(v) for k, v in enc.categories.items()},
        "coef": learner.model.coef_[0].tolist(),
        "intercept": float(learner.model.intercept_[0]),
        "threshold": float(learner.threshold),
        "reference": enc.reference().tolist(),
        "explain_top_k": settings.scoring.explain_top_k,
        "spec": rules,
    }
    path.write_text(json.dumps(out))
    return out


def _tree(root: int) -> list[int]:
    """``root`` and its descendants in root's session (subtrees started in a new session left out)."""
    ppid: dict[int, list[int]] = {}
    sid: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(d.name)
        ppid.setdefault(int(fields[1]), []).append(pid)
        sid[pid] = int(fields[3])
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += [c for c in ppid.get(p, []) if sid.get(c) == sid.get(root)]
    return out


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError):
        return 0


class TreeRss:
    """Peaks of the summed RSS and PSS of a process tree, sampled every ``every`` seconds while in use.

    RSS counts a page shared by forked processes once in each of them (Spark's forked Python workers,
    and a JVM that forks to start a process is counted twice for a moment); PSS divides shared pages
    among their processes, so its sum is the tree's share of the machine's memory."""

    def __init__(self, root: int, every: float = 0.25) -> None:
        self.root, self.every = root, every
        self.peak, self.peak_processes, self.peak_pss = 0, 0, 0
        self.peak_parts: dict[int, tuple[int, int, str]] = {}
        self.cpu_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            pids = [p for p in _tree(self.root) if not _jvm_fork(p)]
            rss = {p: _rss(p) for p in pids}
            total = sum(rss.values())
            # PSS costs ≈10 ms per large process (smaps_rollup walks the page tables): read every 4th
            # sample, and whenever RSS reaches a new peak, so the sampler stays off the measured cores
            if tick % 4 == 0 or total > self.peak:
                sizes = {p: (r, _pss(p)) for p, r in rss.items()}
                pss = sum(s for _, s in sizes.values())
                if pss > self.peak_pss:
                    self.peak_pss = pss
                    self.peak_parts = {p: (r, s, _kind(p)) for p, (r, s) in sizes.items()}
            if total > self.peak:
                self.peak, self.peak_processes = total, len(pids)
            tick += 1
            self._stop.wait(self.every)
        self.cpu_seconds = time.thread_time()

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, Any]:
        """Peak RSS and the number of processes then; peak PSS and, at that moment, RSS and PSS by
        kind of process."""
        parts: dict[str, list[float]] = {}
        for pid, (rss, pss, kind) in self.peak_parts.items():
            part = parts.setdefault("root" if pid == self.root else kind, [0, 0.0, 0.0])
            part[0] += 1
            part[1] += rss / 2**20
            part[2] += pss / 2**20
        by_pss = sorted(parts.items(), key=lambda kv: -kv[1][2])
        mb = {k: {"n": n, "rss_mb": round(r, 1), "pss_mb": round(s, 1)} for k, (n, r, s) in by_pss}
        return {
            "peak_rss_mb": round(self.peak / 2**20, 1),
            "processes_at_peak": self.peak_processes,
            "peak_pss_mb": round(self.peak_pss / 2**20, 1) if self.peak_pss else None,  # None: unreadable
            "at_pss_peak": mb,
            "sampler_cpu_seconds": round(self.cpu_seconds, 2),
        }


def _jvm_fork(pid: int) -> bool:
    """A java process whose parent is java: the JVM's (v)fork about to exec a command, whose memory
    is the JVM's (counted twice otherwise: ≈0.8 GB for a moment)."""
    if _kind(pid) != "jvm":  # most processes: no stat read
        return False
    try:
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return False
    return _kind(parent) == "jvm"


def _pss(pid: int) -> int:
    """Proportional set size in bytes (shared pages divided among their processes); 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def _kind(pid: int) -> str:
    """A short name for a process of the tree: jvm, pyspark daemon/worker, or its program's name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    words = [a.decode(errors="replace") for a in argv if a]
    if not words:
        return "?"
    if Path(words[0]).name == "java":
        return "jvm"
    for w in words[1:3]:
        if w.startswith("pyspark.") or w.endswith(("daemon.py", "worker.py")):
            return w
    if not Path(words[0]).name.startswith("python") or len(words) < 2:
        return Path(words[0]).name
    return words[2] if words[1] == "-m" and len(words) > 2 else Path(words[1]).name


def _peer_cmd(python: Path, settings: Settings, model: Path, group: str) -> list[str]:
    broker = ",".join(connection_options(settings)["bootstrap_servers"])
    return [str(python), str(PEER_APP), "--model", str(model), "--broker", broker, "--group", group]


def peer_throughput(
    settings: Settings, spec: StreamSpec, n: int, warmup_events: int, work: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The peer over the same n-event backlog from offset 0: steady events/s after ``warmup_events``
    (the events of rtml's warm-up micro-batches), CPU and peak RSS; and its output (``ids``,
    ``scores``, ``explained``: the top-k feature names of each)."""
    python = ensure_peer_venv()
    ensure_topics(connection_options(settings), list(PEER_TOPICS), settings.kafka.partitions)
    model = work / "peer-model.json"
    exported = export_champion(settings, spec, model)
    out = work / "peer-throughput.json"
    cmd = _peer_cmd(python, settings, model, f"bench-peer-{time.time()}")
    cmd += ["--mode", "throughput", "--events", str(n), "--warmup-events", str(warmup_events)]
    cmd += ["--out", str(out), "--state-dir", str(work / "quix-state")]
    t0 = time.monotonic()
    with open(work / "peer-throughput.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True, close_fds=True)
        with TreeRss(proc.pid) as rss:
            try:
                rc = proc.wait(timeout=max(600, n / 500))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the peer and nothing else
                raise
    if rc != 0:
        raise SystemExit(f"(p) peer failed ({rc}): {(work / 'peer-throughput.log').read_text()[-2000:]}")
    wall = time.monotonic() - t0
    r, tree = json.loads(out.read_text()), rss.report()
    marks = r["marks"]
    steady = (n - warmup_events) / (marks["last"] - marks["warm"])
    result = {
        "events": r["read"],
        "scored": r["scored"],
        "quarantined": r["quarantined"],
        "duplicates": r["duplicates"],
        "model_version": exported["version"],
        "warmup_events": warmup_events,
        "steady_events_per_s": round(steady, 1),
        "from_first_event_events_per_s": round((n - 1) / (marks["last"] - marks["first"]), 1),
        "wall_seconds_incl_startup": round(wall, 2),
        "seconds_to_partitions_assigned": round(marks["assigned"] - marks["start"], 2),
        "seconds_to_first_event": round(marks["first"] - marks["start"], 2),
        "seconds_after_last_event": round(marks["end"] - marks["last"], 2),
        "cpu_seconds": r["cpu_seconds"],
        "cpu_seconds_per_1000_events": round(r["cpu_seconds"] / n * 1000, 4),
        "peak_rss_mb": r["peak_rss_mb"],
        "peak_pss_mb": tree["peak_pss_mb"],
        "sampled_every_0.25s": tree,
    }
    return result, r


def compare_scores(settings: Settings, spec: StreamSpec, peer: dict[str, Any], threshold: float) -> dict:
    """rtml's scores (the ``scores`` table of phase (c)) against the peer's on the same event ids; with
    explanations on, whether both name the same top-k features."""
    k = settings.scoring.explain_top_k
    names = [f"explain_{i}_feature" for i in range(1, k + 1)]
    ours = read_table(settings, "scores", columns=[spec.event_id, "score", *names])
    pos = {i: n for n, i in enumerate(peer["ids"])}
    idx = np.array([pos.get(i, -1) for i in ours[spec.event_id]], dtype=np.int64)
    common = idx >= 0
    a, b = ours["score"].to_numpy()[common], np.asarray(peer["scores"])[idx[common]]
    diff = np.abs(a - b)
    out = {
        "rtml_scored": len(ours),
        "peer_scored": len(peer["ids"]),
        "common_ids": int(common.sum()),
        "max_abs_diff": float(diff.max()) if len(diff) else None,
        "decisions_differ": int(((a >= threshold) != (b >= threshold)).sum()),
        "equal_within_1e-9": bool(
            len(diff) and diff.max() <= 1e-9 and common.all() and len(peer["ids"]) == len(ours)
        ),
    }
    if k and peer["explained"]:
        theirs = np.asarray(peer["explained"], dtype=object)[idx[common]]
        out["explanations_differ"] = int(
            (ours[names].to_numpy(dtype=object)[common] != theirs).any(axis=1).sum()
        )
    return out


def peer_latency(
    settings: Settings, spec: StreamSpec, work: Path, produce: Callable[[int], None], n: int, warmup: float
) -> dict[str, Any]:
    """The peer from the end of the topic while ``produce(n)`` sends n events at the benchmark's rate
    (as (d)): latency = scored_at - Kafka timestamp, steady after ``warmup`` seconds of traffic."""
    python = ensure_peer_venv()
    model = work / "peer-model.json"
    if not model.exists():
        ensure_topics(connection_options(settings), list(PEER_TOPICS), settings.kafka.partitions)
        export_champion(settings, spec, model)
    out = work / "peer-latency.json"
    cmd = _peer_cmd(python, settings, model, f"bench-peer-lat-{time.time()}")
    ready = work / "peer-latency.ready"
    cmd += ["--mode", "latency", "--out", str(out), "--state-dir", str(work / "quix-state-lat")]
    cmd += ["--ready", str(ready)]
    with open(work / "peer-latency.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True, close_fds=True)
        try:
            t0 = time.monotonic()
            while not ready.exists() and proc.poll() is None and time.monotonic() - t0 < 180:
                time.sleep(0.2)  # the consumer group joined and the partitions assigned
            seconds_to_ready = time.monotonic() - t0
            time.sleep(1)
            t_start_ms = int(time.time() * 1000)
            produce(n)
            time.sleep(5)  # the last events scored
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                raise
    if rc != 0 or not out.exists():
        raise SystemExit(
            f"(p) peer latency run failed ({rc}): {(work / 'peer-latency.log').read_text()[-2000:]}"
        )
    lat = np.array(json.loads(out.read_text())["latency"], dtype=np.int64).reshape(-1, 2)
    lat = lat[lat[:, 0] >= t_start_ms]
    steady_from = t_start_ms + warmup * 1000
    cold, hot = lat[lat[:, 0] < steady_from, 1], lat[lat[:, 0] >= steady_from, 1]
    return {
        "seconds_to_partitions_assigned": round(seconds_to_ready, 2),
        "events": int(len(hot)),
        "latency_ms_p50": float(np.percentile(hot, 50)),
        "latency_ms_p99": float(np.percentile(hot, 99)),
        "latency_ms_max": float(hot.max()),
        "warmup_events": int(len(cold)),
        "warmup_latency_ms_p50": float(np.percentile(cold, 50)) if len(cold) else None,
        "warmup_latency_ms_p99": float(np.percentile(cold, 99)) if len(cold) else None,
    }
