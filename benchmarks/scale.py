"""Scale benchmark: the same new-data step over 1M and 10M rows of history in the Delta tables. JSON.

For each history size a child process writes synthetic history straight into the tables (scores,
labels, labelled, caught up: the labelled table's progress transactions say so), then a second,
fresh child process runs one new-data step -- ``--new`` scored events and their labels committed,
then the labels refresh (the ``rtml-labels`` flow's work), the retrain's window read and the drift
check's reads -- and reports wall time and its own peak RSS. Targets: 10M / 1M <= 1.5 each.

    python benchmarks/scale.py [--sizes 1000000,10000000] [--new 20000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtml.infra.config.settings import load_settings  # noqa: E402
from rtml.infra.config.spec import load_spec  # noqa: E402
from rtml.pipelines import labelled as L  # noqa: E402
from rtml.pipelines.labels import INGEST_APP  # noqa: E402
from rtml.pipelines.tables import append, commit_batch, open_table  # noqa: E402

RATE_MS = 200  # one event every 200 ms of event time (5 events/s): 10M rows = ~23 days
FEATURES = 16
CHUNK = 500_000
END_MS = 1_764_547_200_000  # 2025-12-01T00:00Z: history ends here, new data follows


def _scores(lo: int, hi: int, start_ms: int, rng: np.random.Generator) -> pa.Table:
    n = np.arange(lo, hi)
    ev = start_ms + n * RATE_MS
    cols = {
        "transaction_id": pa.array([f"t{i:010d}" for i in n]),
        "card_id": pa.array([f"card_{i % 50_000}" for i in n]),
        "_event_ms": pa.array(ev, pa.int64()),
        "score": pa.array(rng.random(len(n))),
        "decision": pa.array((rng.random(len(n)) > 0.97).astype("int64")),
        "model_version": pa.array(["1"] * len(n)),
        "scored_at_ms": pa.array(ev + 50, pa.int64()),
    }
    for f in range(FEATURES):
        cols[f"f{f}"] = pa.array(rng.normal(size=len(n)))
    return pa.table(cols)


def _labels_for(t: pa.Table, rng: np.random.Generator) -> pa.Table:
    n = t.num_rows
    keep = rng.random(n) < 0.3  # 30% get a label message (the rest expire as negative)
    ids = np.asarray(t.column("transaction_id").to_pylist(), dtype=object)[keep]
    at = t.column("_event_ms").to_numpy()[keep] + 3_600_000
    return pa.table(
        {
            "transaction_id": pa.array(list(ids)),
            "is_fraud": pa.array((rng.random(len(ids)) < 0.1).astype("int64")),
            "labelled_at_ms": pa.array(at, pa.int64()),
        }
    )


def build(root: str, rows: int) -> dict:
    s = load_settings(overrides={"state_dir": root}, use_default_file=False)
    rng = np.random.default_rng(7)
    start = END_MS - rows * RATE_MS
    t0 = time.monotonic()
    horizon = 2 * 86_400_000
    for b, lo in enumerate(range(0, rows, CHUNK)):
        t = _scores(lo, min(rows, lo + CHUNK), start, rng)
        commit_batch(s, "scores", t, "bench-scores", b)
        lab = _labels_for(t, rng)
        append(s, "labels", lab, {INGEST_APP: b + 1})
        # the labelled rows as the refresh leaves them: labelled, expired, or pending
        frame = t.to_pandas().merge(lab.to_pandas(), on="transaction_id", how="left")
        ev = frame["_event_ms"]
        state = np.where(
            frame["is_fraud"].notna(), "labelled", np.where(ev <= END_MS - horizon, "expired", "pending")
        )
        frame.loc[state == "expired", "is_fraud"] = 0
        frame["is_fraud"] = frame["is_fraud"].astype("Int64")
        frame["labelled_at_ms"] = frame["labelled_at_ms"].astype("Int64")
        frame[L.STATE] = state
        append(s, L.TABLE, pa.Table.from_pandas(frame, preserve_index=False), {})
    v_scores, v_labels = open_table(s, "scores").version(), open_table(s, "labels").version()
    dt = open_table(s, L.TABLE)
    L._mark(s, dt, L.APP_SCORES, v_scores)
    L._mark(s, open_table(s, L.TABLE), L.APP_LABELS, v_labels)
    L._mark(s, open_table(s, L.TABLE), L.APP_CUT, END_MS - horizon)
    return {"rows": rows, "build_s": round(time.monotonic() - t0, 1)}


def step(root: str, rows: int, new: int) -> dict:
    s = load_settings(overrides={"state_dir": root}, use_default_file=False)
    spec = load_spec()
    rng = np.random.default_rng(11)
    out: dict = {"rows": rows, "new": new}
    t = _scores(rows, rows + new, END_MS - rows * RATE_MS, rng)
    t0 = time.monotonic()
    commit_batch(s, "scores", t, "bench-scores", 10_000)
    append(s, "labels", _labels_for(t, rng), {INGEST_APP: 10_000})
    out["commit_s"] = round(time.monotonic() - t0, 3)
    t0 = time.monotonic()
    out["refresh"] = L.refresh_labelled(s, spec)
    out["refresh_s"] = round(time.monotonic() - t0, 3)
    t0 = time.monotonic()
    window = L.read_labelled(s, END_MS - 1)  # the retrain's incremental window: newer than its watermark
    out["retrain_window_rows"], out["retrain_read_s"] = len(window), round(time.monotonic() - t0, 3)
    t0 = time.monotonic()
    perf = L.read_labelled(s, END_MS + new * RATE_MS - 3_600_000)  # drift: labelled feedback, last hour
    from rtml.pipelines.tables import read_table

    recent = read_table(s, "scores", since_event_ms=END_MS + new * RATE_MS - 3_600_000)
    out["drift_rows"] = [len(perf), len(recent)]
    out["drift_read_s"] = round(time.monotonic() - t0, 3)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--new", type=int, default=20_000)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--child", choices=["build", "step"])
    ap.add_argument("--rows", type=int)
    args = ap.parse_args()
    if args.child:
        fn = build if args.child == "build" else lambda r, n: step(r, n, args.new)
        print(json.dumps(fn(args.dir, args.rows)))
        return
    results = []
    base = Path(args.dir or tempfile.mkdtemp(prefix="rtml-scale-"))
    for rows in [int(x) for x in args.sizes.split(",")]:
        root = base / f"h{rows}"
        child = [sys.executable, __file__, "--dir", str(root), "--rows", str(rows), "--new", str(args.new)]
        built = json.loads(
            subprocess.run([*child, "--child", "build"], capture_output=True, check=True).stdout
        )
        stepped = json.loads(
            subprocess.run([*child, "--child", "step"], capture_output=True, check=True).stdout
        )
        results.append({**built, **stepped})
    out: dict = {"results": results}
    if len(results) == 2:
        a, b = results
        out["ratios"] = {
            k: round(b[k] / a[k], 2) if a[k] else None
            for k in ("refresh_s", "retrain_read_s", "drift_read_s", "peak_rss_mb")
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
