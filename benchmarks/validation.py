"""Validation-stage benchmark: Spark SQL validation of N raw events, local Spark, JSON on stdout.

Generated card transactions (with a share of malformed ones, every generator kind) are cached as
Kafka-like rows; each round runs the validation and discards the result (Spark's ``noop`` sink),
so the figure is the parse + checks cost alone. ``--baseline FILE`` times another version of
``pipelines/validation.py`` (e.g. ``git show main:pipelines/validation.py > /tmp/old.py``) in the
same session, rounds interleaved so that both see the same machine load.

    python benchmarks/validation.py [--events 200000] [--rounds 5] [--malformed 0.02] [--baseline FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtml.infra.config.spec import load_spec  # noqa: E402
from rtml.pipelines.generator import (  # noqa: E402
    MALFORMED_KINDS,
    CardTransactionGenerator,
    encode_events,
    malform,
    to_event_frame,
)
from rtml.pipelines.validation import validate  # noqa: E402


def _payloads(n: int, malformed: float, seed: int = 5) -> list[bytes]:
    spec = load_spec()
    now_ms = int(time.time() * 1000)
    frame = CardTransactionGenerator(seed=seed, start_ms=now_ms - n * 500).batch(n, end_ms=now_ms)
    payloads = encode_events(to_event_frame(frame, spec))
    rng = np.random.default_rng(seed)
    for i in np.flatnonzero(rng.random(n) < malformed):
        kind = MALFORMED_KINDS[int(rng.integers(len(MALFORMED_KINDS)))]
        payloads[i] = malform(payloads[i], kind, spec, rng, 16_384)
    return payloads


def _time(fn: Any, df: Any) -> float:
    t0 = time.monotonic()
    fn(df, load_spec(), 16_384).write.format("noop").mode("overwrite").save()
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--malformed", type=float, default=0.02)
    ap.add_argument("--baseline", type=Path, help="another validation.py to time in the same session")
    args = ap.parse_args()

    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [(None, p, "events", i % 2, i, now) for i, p in enumerate(_payloads(args.events, args.malformed))]
    ddl = "key binary, value binary, topic string, partition int, offset bigint, timestamp timestamp"
    df = spark.createDataFrame(rows, ddl).repartition(2).cache()
    df.count()
    versions = {"current": validate}
    if args.baseline:
        mod_spec = importlib.util.spec_from_file_location("baseline_validation", args.baseline)
        assert mod_spec and mod_spec.loader
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        versions["baseline"] = module.validate
    for fn in versions.values():  # warm-up: code generation and JIT
        _time(fn, df)
        _time(fn, df)
    times: dict[str, list[float]] = {k: [] for k in versions}
    for _ in range(args.rounds):
        for name, fn in versions.items():
            times[name].append(_time(fn, df))
    out = {
        name: {
            "median_s": round(statistics.median(t), 3),
            "min_s": round(min(t), 3),
            "events_per_s_median": round(args.events / statistics.median(t)),
            "rounds_s": [round(x, 3) for x in t],
        }
        for name, t in times.items()
    }
    counts = validate(df, load_spec(), 16_384).groupBy("_reason").count().collect()
    out["events"] = args.events
    out["quarantined"] = sum(r["count"] for r in counts if r["_reason"] is not None)
    reasons: dict[str, int] = {}
    for r in counts:
        if r["_reason"] is not None:
            family = r["_reason"].split(":")[0]
            reasons[family] = reasons.get(family, 0) + r["count"]
    out["quarantined_by_reason"] = dict(sorted(reasons.items()))
    print(json.dumps(out, indent=1))
    spark.stop()


if __name__ == "__main__":
    main()
