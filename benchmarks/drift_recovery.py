"""Drift recovery through the platform, against River's HoeffdingAdaptiveTree. JSON on stdout.

For each public concept-drift generator (River ``datasets.synth``: SEA and Agrawal, the concept
switching at ``--drift-at``): bootstrap a champion on ``--boot`` events of the first concept, then
replay the stream through the platform as a user would -- events onto Kafka with their labels
``--label-delay`` events later (the benchmark is the label feed: the labels topic's JSON records),
Spark scoring with the champion of the moment, and every ``--retrain-every`` events the retrain
flow (labels refresh, quality gate, candidates ``continue`` and ``fresh`` -- fresh ones trained
from the change point of the champion's error stream when one is detected -- decision, promotion).
Each stream bootstraps the learner family a user would choose for it (``--learner``; defaults:
a linear model for SEA, a Hoeffding tree for the rule-shaped Agrawal), printed in the settings.
Prequential F1 of what was served (the score table's decisions) over: the events before the drift,
the first ``--retrain-every`` events after it, the rest, and overall; next to River's
HoeffdingAdaptiveTree fed the same events and the same delayed labels (pre-trained on the same
bootstrap events), and to the bootstrap champion never retrained.

    python benchmarks/drift_recovery.py [--n 20000] [--drift-at 8000] [--streams sea,agrawal]

Starts its own broker, MLflow and Prefect on free ports in a temporary state dir (about 5 min per
stream on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RATE = 10.0  # events per second of event time
# the bootstrap learner (model.family) a user would pick per stream: SEA's concept is a linear
# threshold (a linear model represents it), Agrawal's is a set of rules (a tree represents it)
DEFAULT_LEARNERS = {"sea": "sgd_logistic", "agrawal": "hoeffding_tree"}


def learners_of(option: str, streams: list[str]) -> dict[str, str]:
    """``stream=family`` pairs (comma-separated) over the per-stream defaults.

    >>> learners_of("agrawal=sgd_logistic", ["sea", "agrawal"])
    {'sea': 'sgd_logistic', 'agrawal': 'sgd_logistic'}
    """
    chosen = {name: DEFAULT_LEARNERS.get(name, "sgd_logistic") for name in streams}
    for pair in filter(None, option.split(",")):
        name, sep, family = pair.partition("=")
        if not sep or name not in chosen:
            raise SystemExit(f"--learner: expected stream=family ({', '.join(streams)}), got {pair!r}")
        chosen[name] = family
    return chosen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def river_stream(name: str, n: int, drift_at: int, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """``n`` events of a River generator whose concept switches abruptly at ``drift_at`` (the same
    generator family with another classification function / variant after it)."""
    from river.datasets import synth

    if name == "sea":
        before, after = (
            synth.SEA(variant=0, noise=0.05, seed=seed),
            synth.SEA(variant=3, noise=0.05, seed=seed + 1),
        )
    elif name == "agrawal":
        before = synth.Agrawal(classification_function=0, seed=seed, balance_classes=True)
        after = synth.Agrawal(classification_function=2, seed=seed + 1, balance_classes=True)
    else:
        raise SystemExit(f"unknown stream {name!r} (sea, agrawal)")
    # abrupt drift at an exact position: the first concept's events, then the second's
    pairs = [*before.take(drift_at), *after.take(n - drift_at)]
    rows = [{**{str(k): float(v) for k, v in x.items()}, "y": int(y)} for x, y in pairs]
    frame = pd.DataFrame(rows)
    features = [c for c in frame.columns if c != "y"]
    frame.columns = [f"f_{c}" if c != "y" else c for c in frame.columns]
    return frame, [f"f_{c}" for c in features]


def write_spec(path: Path, name: str, features: list[str]) -> Path:
    spec = {
        "name": f"drift_{name}",
        "task": "classification",
        "event_id": "id",
        "event_time": "t",
        "event_time_format": "epoch_s",
        "entity_key": "source",
        "features": [{"name": f, "type": "double"} for f in features],
        "label": {
            "field": "y",
            "type": "long",
            "positive": 1,
            "horizon": "1d",
            "unlabelled_after_horizon": "drop",
        },
        "extra_fields": "reject",
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def with_events(frame: pd.DataFrame, start_s: float, prefix: str) -> pd.DataFrame:
    out = frame.copy()
    out.insert(0, "id", [f"{prefix}-{i}" for i in range(len(out))])
    out.insert(1, "t", start_s + np.arange(len(out)) / RATE)
    out.insert(2, "source", [f"s{i % 8}" for i in range(len(out))])
    return out


def f1(y: np.ndarray, pred: np.ndarray) -> float:
    tp = float(np.sum((y == 1) & (pred == 1)))
    fp, fn = float(np.sum((y == 0) & (pred == 1))), float(np.sum((y == 1) & (pred == 0)))
    return round(2 * tp / (2 * tp + fp + fn), 4) if tp else 0.0


def segments(y: np.ndarray, pred: np.ndarray, drift_at: int, window: int) -> dict[str, float]:
    return {
        "before_drift": f1(y[:drift_at], pred[:drift_at]),
        "first_window_after": f1(y[drift_at : drift_at + window], pred[drift_at : drift_at + window]),
        "rest_after": f1(y[drift_at + window :], pred[drift_at + window :]),
        "overall": f1(y, pred),
    }


def river_hat(
    boot: pd.DataFrame, stream: pd.DataFrame, features: list[str], delay: int, seed: int
) -> np.ndarray:
    """Prequential predictions of HoeffdingAdaptiveTree: predict each event, learn its label ``delay``
    events later (pre-trained on the bootstrap events)."""
    from river import tree

    model = tree.HoeffdingAdaptiveTreeClassifier(seed=seed)
    for x, y in zip(boot[features].to_dict("records"), boot["y"], strict=True):
        model.learn_one(x, int(y))
    pending: deque[tuple[dict, int]] = deque()
    preds = np.zeros(len(stream), dtype=int)
    for i, (x, y) in enumerate(zip(stream[features].to_dict("records"), stream["y"], strict=True)):
        preds[i] = int(model.predict_one(x) or 0)
        pending.append((x, int(y)))
        if len(pending) > delay:
            model.learn_one(*pending.popleft())
    return preds


def send_labels(settings: Any, spec: Any, frame: pd.DataFrame) -> None:
    """The label feed: one JSON record per label on the labels topic (README: Late labels in a replay)."""
    from rtml.infra.config.kafka_clients import connection_options
    from rtml.pipelines.bulk_producer import deliver, make_bulk_producer
    from rtml.pipelines.generator import encode_events

    if not len(frame):
        return
    records = frame[[spec.event_id, "y"]].assign(labelled_at_ms=int(time.time() * 1000))
    producer = make_bulk_producer(connection_options(settings), settings.kafka.io_client)
    deliver(producer, [(settings.kafka.topics.labels, None, v, None, None) for v in encode_events(records)])


def _live(evidence: dict[str, Any]) -> dict[str, Any] | None:
    """The round's live-evidence verdict on the @shadow (``--evidence shadow|both``), short."""
    if "outcome" not in evidence:
        return None
    live = evidence.get("live") or {}
    return {"version": evidence.get("version"), "outcome": evidence["outcome"], "n": live.get("n")}


def run_stream(name: str, args: argparse.Namespace, root: Path, stack: Any) -> dict[str, Any]:
    from rtml.flows.bootstrap import bootstrap
    from rtml.flows.retrain import retrain_flow
    from rtml.infra.config.clients import prefect_api
    from rtml.infra.config.kafka_clients import connection_options, ensure_topics
    from rtml.infra.config.settings import load_settings
    from rtml.infra.config.spec import load_spec
    from rtml.models.lifecycle.registry import CHAMPION, alias_version, load_model
    from rtml.pipelines.producer import stream_frames
    from rtml.pipelines.score_job import run_scoring
    from rtml.pipelines.tables import open_table

    data, features = river_stream(name, args.boot + args.n, args.boot + args.drift_at, args.seed)
    now = time.time()
    history = with_events(data.iloc[: args.boot].reset_index(drop=True), now - 3 * 3600, f"h{name}")
    stream = with_events(data.iloc[args.boot :].reset_index(drop=True), now - args.n / RATE - 60, f"s{name}")
    work = root / name
    work.mkdir()
    history.to_parquet(work / "history.parquet")
    overrides = {
        "state_dir": str(work / "state"),
        "ports": stack.ports.model_dump(),
        "spec": str(write_spec(work / "spec.yaml", name, features)),
        "kafka": {
            "topics": {t: f"{name}.{t}" for t in ("events", "labels", "scores", "quarantine", "alerts")}
        },
        "mlflow": {"model_name": f"drift-{name}", "experiment": f"drift-{name}"},
        "metrics": {"port": _free_port()},
        "scoring": {"dedup_horizon_seconds": 0},
        "model": {"family": args.learners[name]},
        # --evidence shadow|both: the best candidate not promoted becomes @shadow, the next round's
        # scoring scores it beside the champion, and live labelled events decide its promotion
        "promotion": {
            "min_holdout": 200,
            "min_positives": 20,
            "shadow": args.evidence != "holdout",
            "evidence": args.evidence,
        },
        "retrain": {
            "min_new_rows": args.retrain_every // 2,
            "candidates": args.candidates.split(","),
            "window_limit": f"{int(args.window / RATE)}s",
            "epochs": args.epochs,
        },
        # labels disagreeing with the champion are the drift itself here: the label-consistency
        # check (against label flips) is off unless asked for; positive-rate bounds come from the
        # bootstrap data's own rate
        "quality": {"label_check": args.label_check},
    }
    s = load_settings(use_default_file=False, overrides=overrides)
    spec = load_spec(s.spec)
    ensure_topics(connection_options(s), s.kafka.topics.all(), s.kafka.partitions)
    bootstrap(s, spec, from_file=work / "history.parquet")
    rounds = []
    sent_labels = 0
    for start in range(0, args.n, args.retrain_every):
        end = min(args.n, start + args.retrain_every)
        stream_frames(s, spec, iter([stream.iloc[start:end].drop(columns=["y"])]))
        due = max(0, end - args.label_delay)
        send_labels(s, spec, stream.iloc[sent_labels:due])
        sent_labels = due
        run_scoring(s, spec, available_now=True)
        if due > 0:
            with prefect_api(s):
                out = retrain_flow(overrides=overrides, trigger="manual")
            rounds.append(
                {
                    "events": end,
                    "outcome": out["outcome"],
                    "reason": out.get("reason", "")[:120],
                    "champion": out.get("champion_after"),
                    "live": _live(out.get("evidence", {})),
                    "shadow_set": (out.get("shadow") or {}).get("set"),
                    "shadow_kept": (out.get("shadow") or {}).get("kept"),
                    "change_point": out.get("change_point", {}).get("change_rows_before")
                    if out.get("change_point", {}).get("change") == "detected"
                    else None,
                    "candidates": [
                        {k: c.get(k) for k in ("candidate", "outcome", "f1", "train_rows")}
                        for c in out.get("candidates", [])
                    ],
                }
            )
    scores = open_table(s, "scores").to_pandas(columns=["id", "decision", "model_version"])
    served = stream[["id", "y"]].merge(scores.drop_duplicates("id"), on="id", how="left")
    missing = int(served["decision"].isna().sum())
    served_pred = served["decision"].fillna(0).astype(int).to_numpy()
    y = stream["y"].to_numpy()
    v1 = load_model(s.tracking_uri, s.mlflow.model_name, "1")
    never = (v1.learner.score(stream[v1.columns]) >= v1.learner.threshold).astype(int)
    hat = river_hat(history, stream, features, args.label_delay, args.seed)
    seg = lambda pred: segments(y, pred, args.drift_at, args.retrain_every)  # noqa: E731
    rtml_f1, river_f1 = seg(served_pred), seg(hat)
    return {
        "stream": name,
        "learner": args.learners[name],
        "events": args.n,
        "positives": int(y.sum()),
        "unscored": missing,
        "f1": {"rtml": rtml_f1, "river_hat": river_f1, "never_retrained": seg(never)},
        "rtml_ge_river": {k: rtml_f1[k] >= river_f1[k] for k in rtml_f1 if k != "before_drift"},
        "promotions": sum(r["outcome"] == "promote" for r in rounds),
        "final_champion": alias_version(s, CHAMPION),
        "rounds": rounds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", default="sea,agrawal")
    ap.add_argument("--n", type=int, default=20_000, help="stream events per generator")
    ap.add_argument("--boot", type=int, default=3_000, help="bootstrap events (first concept)")
    ap.add_argument("--drift-at", type=int, default=8_000, help="stream event where the concept switches")
    ap.add_argument("--retrain-every", type=int, default=2_000)
    ap.add_argument("--label-delay", type=int, default=1_000, help="events between an event and its label")
    ap.add_argument("--window", type=int, default=4_000, help="retrain.window_limit, in events")
    ap.add_argument("--candidates", default="continue,fresh")
    ap.add_argument(
        "--learner",
        default="",
        help=f"bootstrap learner per stream, stream=family[,...] (defaults: {DEFAULT_LEARNERS})",
    )
    ap.add_argument(
        "--evidence",
        choices=["holdout", "shadow", "both"],
        default="holdout",
        help="promotion.evidence (shadow and both also set promotion.shadow)",
    )
    ap.add_argument(
        "--epochs", type=int, default=None, help="retrain.epochs (default: the learner family's own)"
    )
    ap.add_argument("--label-check", action="store_true", help="keep the label-consistency gate on")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    args.learners = learners_of(args.learner, args.streams.split(","))

    from rtml.infra.app import stack as stack_mod
    from rtml.infra.config.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="rtml-drift-") as tmp:
        root = Path(tmp)
        stack = load_settings(
            use_default_file=False,
            overrides={
                "state_dir": str(root / "stack"),
                "ports": {"kafka": _free_port(), "mlflow": _free_port(), "prefect": _free_port()},
            },
        )
        stack_mod.up(stack, timeout_s=120)
        t0 = time.monotonic()
        try:
            with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links: stdout is the JSON only
                results = [run_stream(name, args, root, stack) for name in args.streams.split(",")]
        finally:
            stack_mod.down(stack)
    print(
        json.dumps(
            {
                "benchmark": "drift_recovery",
                "settings": {k: v for k, v in vars(args).items() if k != "learner"},
                "seconds": round(time.monotonic() - t0, 1),
                "streams": results,
            }
        )
    )


if __name__ == "__main__":
    main()
