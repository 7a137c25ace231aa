"""Explanation cost benchmark, JSON on stdout: the scoring stage's Python work on 50k-row Arrow
batches with explanations off and on (``scoring.explain_top_k``), in one process, per family.

What is timed per batch is what the scorer does inside Spark's Python worker: Arrow record batch ->
pandas, :func:`rtml.pipelines.scorer.score_frame` (model inputs, scores, decisions and, when on,
the top-k contributions), pandas -> Arrow record batch in the output schema. Off and on alternate
batch by batch over the same featurised events, so both see the same machine load; the figure is
the median over ``--repeats`` passes, in wall-clock and in CPU seconds of this process (steadier on a
shared machine). Classification families score generated card transactions
(featurised by the same code as training); ``streaming_linear`` a regression of the amount.

    python benchmarks/explain.py [--rows 50000] [--repeats 7] [--top-k 3] [--families sgd_logistic,...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtml.features.featurise import featurise_history, model_frame  # noqa: E402
from rtml.infra.config.spec import load_spec  # noqa: E402
from rtml.models.learners.families import FAMILIES  # noqa: E402
from rtml.pipelines.generator import CardTransactionGenerator, to_event_frame  # noqa: E402
from rtml.pipelines.scorer import KAFKA_MS, score_arrow_schema, score_frame  # noqa: E402


def featurised(spec: Any, n: int, seed: int) -> tuple[Any, np.ndarray]:
    """n featurised events as the state stage hands them to the scorer, and their labels."""
    raw = CardTransactionGenerator(seed=seed, n_cards=5000).batch(n)
    frame = featurise_history(to_event_frame(raw, spec), spec)
    frame["partition"] = np.zeros(n, dtype=np.int32)
    frame["offset"] = np.arange(n, dtype=np.int64)
    frame["_reason"] = None
    frame["value"] = None
    frame["topic"] = "events"
    frame[KAFKA_MS] = int(time.time() * 1000)
    return frame, raw["is_fraud"].to_numpy()


def trained(family: str, spec: Any, frame: Any, y: np.ndarray) -> Any:
    learner = FAMILIES[family](
        spec.model_numeric_inputs, {f.name: f.categories for f in spec.features if f.categories}
    )
    X = model_frame(frame, spec)
    target = X["amount"].to_numpy() * 0.1 + y if family == "streaming_linear" else y
    for start in range(0, len(X), 10_000):
        learner.learn(X.iloc[start : start + 10_000], target[start : start + 10_000])
    return SimpleNamespace(learner=learner, columns=spec.model_inputs)


def stage(rb: Any, spec: Any, model: Any, k: int, schema: Any) -> Any:
    """One Arrow batch through the scorer, as in the Python worker."""
    import pyarrow as pa

    return pa.RecordBatch.from_pandas(score_frame(rb.to_pandas(), spec, model, "1", k), schema=schema)


def bench(family: str, rows: int, repeats: int, k: int) -> dict[str, Any]:
    import pyarrow as pa

    spec = load_spec()
    train, y = featurised(spec, 40_000, seed=1)
    model = trained(family, spec, train, y)
    frame, _ = featurised(spec, rows, seed=2)
    rb = pa.RecordBatch.from_pandas(frame, preserve_index=False)
    schemas = {0: score_arrow_schema(spec, 0), k: score_arrow_schema(spec, k)}
    for kk in (0, k):  # warm-up: imports, caches
        stage(rb, spec, model, kk, schemas[kk])
    times: dict[int, list[float]] = {0: [], k: []}
    cpu: dict[int, list[float]] = {0: [], k: []}
    for i in range(repeats):
        for kk in (0, k) if i % 2 == 0 else (k, 0):
            t0, c0 = time.perf_counter(), time.process_time()
            stage(rb, spec, model, kk, schemas[kk])
            times[kk].append(time.perf_counter() - t0)
            cpu[kk].append(time.process_time() - c0)
    off, on = statistics.median(times[0]), statistics.median(times[k])
    cpu_off, cpu_on = statistics.median(cpu[0]), statistics.median(cpu[k])
    explained = model.learner.contributions(model_frame(frame, spec))
    return {
        "family": family,
        "rows": rows,
        "off_s": round(off, 4),
        "on_s": round(on, 4),
        "off_events_per_s": round(rows / off),
        "on_events_per_s": round(rows / on),
        "cost": round(on / off - 1, 4),
        "off_cpu_s": round(cpu_off, 4),
        "on_cpu_s": round(cpu_on, 4),
        "cpu_cost": round(cpu_on / cpu_off - 1, 4),
        "output": explained.output,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--families", default=",".join(sorted(FAMILIES)))
    args = ap.parse_args()
    results = [bench(f, args.rows, args.repeats, args.top_k) for f in args.families.split(",")]
    print(json.dumps({"top_k": args.top_k, "rows_per_batch": args.rows, "families": results}, indent=1))


if __name__ == "__main__":
    main()
