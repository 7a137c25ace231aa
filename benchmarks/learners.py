"""Learner benchmark, JSON on stdout: learn and predict throughput of each model family on
mini-batches, next to the equivalent River model run one event at a time, on the same data.

Data: generated card transactions with the default spec's model inputs (classification and anomaly
families), and a linear target over the same inputs (regression family).

    python benchmarks/learners.py [--n 20000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtml.features.featurise import EVENT_MS, featurise_history, model_frame  # noqa: E402
from rtml.infra.config.spec import load_spec  # noqa: E402
from rtml.models.learners.families import FAMILIES  # noqa: E402
from rtml.pipelines.generator import CardTransactionGenerator  # noqa: E402


def river_twin(family: str, numeric: list[str], categorical: list[str]) -> Any:
    from river import cluster, compose, linear_model, preprocessing, tree

    prep = compose.Select(*numeric) | preprocessing.StandardScaler()
    prep = prep + (compose.Select(*categorical) | preprocessing.OneHotEncoder())
    return {
        "sgd_logistic": lambda: prep | linear_model.LogisticRegression(),
        "hoeffding_tree": lambda: tree.HoeffdingTreeClassifier(leaf_prediction="mc"),
        "streaming_kmeans": lambda: prep | cluster.KMeans(n_clusters=8, seed=0),
        "streaming_linear": lambda: prep | linear_model.LinearRegression(),
    }[family]()


def rate(n: int, seconds: float) -> float:
    return round(n / max(seconds, 1e-9), 1)


def bench(family: str, X: Any, y: np.ndarray, batch: int, river_rows: int) -> dict[str, Any]:
    spec = load_spec()
    ours = FAMILIES[family](
        spec.model_numeric_inputs, {f.name: f.categories for f in spec.features if f.categories}
    )
    t0 = time.perf_counter()
    for start in range(0, len(X), batch):
        ours.learn(X.iloc[start : start + batch], y[start : start + batch])
    learn_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(0, len(X), batch):
        ours.score(X.iloc[start : start + batch])
    score_s = time.perf_counter() - t0

    twin = river_twin(family, spec.model_numeric_inputs, spec.categorical_names)
    rows = X.head(river_rows).to_dict("records")
    labels = y[:river_rows].tolist()
    t0 = time.perf_counter()
    for x, yi in zip(rows, labels, strict=True):
        twin.learn_one(x) if family == "streaming_kmeans" else twin.learn_one(x, yi)
    r_learn = time.perf_counter() - t0
    predict = (
        twin.predict_one if family in ("streaming_kmeans", "streaming_linear") else twin.predict_proba_one
    )
    t0 = time.perf_counter()
    for x in rows:
        predict(x)
    r_score = time.perf_counter() - t0
    out = {
        "learn_events_per_s": rate(len(X), learn_s),
        "score_events_per_s": rate(len(X), score_s),
        "river_learn_one_events_per_s": rate(len(rows), r_learn),
        "river_predict_one_events_per_s": rate(len(rows), r_score),
    }
    out["score_speedup_vs_river"] = round(
        out["score_events_per_s"] / out["river_predict_one_events_per_s"], 1
    )
    out["learn_speedup_vs_river"] = round(out["learn_events_per_s"] / out["river_learn_one_events_per_s"], 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--river-rows", type=int, default=5_000, help="events for River's per-event loop")
    args = ap.parse_args()
    spec = load_spec()
    gen = CardTransactionGenerator(seed=3, start_ms=0)
    frame = featurise_history(gen.batch(args.n).rename(columns={"event_time_ms": EVENT_MS}), spec)
    X = model_frame(frame, spec)[spec.model_inputs]
    y = frame[spec.label.field].to_numpy().astype(np.int64)
    target = 0.01 * X["amount"].to_numpy() + 0.5 * X["event_hour"].to_numpy()  # regression family
    results = {
        family: bench(family, X, target if family == "streaming_linear" else y, args.batch, args.river_rows)
        for family in FAMILIES
    }
    print(
        json.dumps(
            {"events": args.n, "batch": args.batch, "river_rows": args.river_rows, "families": results}
        )
    )


if __name__ == "__main__":
    main()
