"""Scale benchmark: the whole new-data step over 1M and 10M scored events of history. JSON.

For each history size a child process writes synthetic history straight into the Delta tables
(``scores``, ``labels``, ``labelled`` caught up: the labelled table's progress transactions say so),
cloned from a featurised batch of the card-transaction generator (real model inputs), and trains
the champion in process (pickled next to the tables: no MLflow). Then each step of one new-data
round runs in its own fresh child process, which reports its wall time and its own peak RSS
(``ru_maxrss``; ``base_rss_mb`` is the RSS after imports and inputs, before the timed work):

- ``arrive``: ``--new`` scored events committed to ``scores`` and their label messages to ``labels``
  (the scoring job's and the label ingest's commits);
- ``labels``: the labels refresh (:func:`rtml.pipelines.labelled.refresh_labelled`, the ``rtml-labels``
  flow's work);
- ``retrain``: the retrain engine (flows/retrain.py's ``select_window`` + ``train`` + ``evaluate``):
  the window read from the labelled table at a recorded version (incremental: newer than the
  champion's watermark, 6 h before the end of history), the quarantined-id exclusion, the split,
  the challenger trained, champion and challenger judged on the same holdout. Not timed: the
  quality gate (Great Expectations) and the MLflow logging/registration, which see only the window;
- ``drift``: the drift check's engine (flows/drift.py): scores of the last ``drift.window`` and the
  champion's labelled feedback of the last ``drift.performance_window`` read from the tables, the
  input/score drift statistics against the champion's reference profile and live P/R/F1 + ADWIN.

Targets: 10M / 1M <= 1.5 for each time and peak RSS.

    python benchmarks/scale.py [--sizes 1000000,10000000] [--new 20000] [--repeat 3] [--chunk 500000]
                                [--dir DIR]

Each step runs ``--repeat`` times per size, the sizes interleaved (the machine's load falls on both
alike); the median time and the largest peak RSS are reported. The refresh is repeated from the same
state (the tables as the new data left them, restored from a hard-link copy).
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtml.infra.config.settings import load_settings  # noqa: E402
from rtml.infra.config.spec import load_spec, parse_duration_seconds  # noqa: E402
from rtml.pipelines import labelled as L  # noqa: E402
from rtml.pipelines.labels import INGEST_APP  # noqa: E402
from rtml.pipelines.tables import append, commit_batch, open_table  # noqa: E402

RATE_MS = 200  # one event every 200 ms of event time (5 events/s): 10M rows = ~23 days
CHUNK = 500_000  # rows per history commit (--chunk): fewer, larger commits than a live stream's
TEMPLATE = 50_000  # featurised generator events the history is cloned from
END_MS = 1_764_547_200_000  # 2025-12-01T00:00Z: history ends here, new data follows
WATERMARK_MS = END_MS - 6 * 3_600_000  # the champion's training watermark: the retrain window
HOUR_MS = 3_600_000
STEPS = ("arrive", "labels", "retrain", "drift")


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _settings(root: str):  # noqa: ANN202
    return load_settings(overrides={"state_dir": root}, use_default_file=False)


def _template(spec) -> pa.Table:  # noqa: ANN001
    from rtml.features.featurise import featurise_history
    from rtml.pipelines.history import history_frame

    frame = featurise_history(history_frame(spec, TEMPLATE, 3, None), spec)
    return pa.Table.from_pandas(frame.drop(columns=["drifted"]).reset_index(drop=True), preserve_index=False)


def _scored(tpl: pa.Table, lo: int, hi: int, start_ms: int) -> tuple[pa.Table, np.ndarray]:
    """Scored events lo..hi-1 (template rows cloned, new ids and times) and their true labels."""
    import pyarrow.compute as pc

    n = np.arange(lo, hi)
    t = tpl.take(pa.array(n % tpl.num_rows))
    ev = start_ms + n * RATE_MS
    truth = t.column("is_fraud").to_numpy()
    t = t.drop_columns(["transaction_id", "_event_ms", "event_hour", "is_fraud"])
    rng = np.random.default_rng(lo)
    amount = pc.fill_null(t.column("amount"), 0.0).to_numpy()
    score = np.clip(rng.random(len(n)) * 0.2 + truth * 0.6 + (amount > 500) * 0.1, 0, 1)
    cols = {
        "transaction_id": pa.array([f"t{i:010d}" for i in n]),
        "_event_ms": pa.array(ev, pa.int64()),
        "event_hour": pa.array(((ev // HOUR_MS) % 24).astype("float64")),
        "score": pa.array(score),
        "decision": pa.array((score >= 0.5).astype("int64")),
        "model_version": pa.array(["1"] * len(n)),
        "scored_at_ms": pa.array(ev + 50, pa.int64()),
    }
    for name, col in cols.items():
        t = t.append_column(name, col)
    return t, truth


def _labels_for(t: pa.Table, truth: np.ndarray, seed: int) -> pa.Table:
    """Label messages: every fraud and ~27% of the rest, an hour after the event (others expire)."""
    keep = (truth == 1) | (np.random.default_rng(seed).random(len(truth)) < 0.27)
    ids = t.column("transaction_id").filter(pa.array(keep))
    at = t.column("_event_ms").to_numpy()[keep] + HOUR_MS
    return pa.table(
        {"transaction_id": ids, "is_fraud": pa.array(truth[keep]), "labelled_at_ms": pa.array(at)}
    )


def build(root: str, rows: int, new: int, chunk: int = CHUNK) -> dict:
    from rtml.models.monitoring.profile import build_profile
    from rtml.models.training.bootstrap import train_initial

    s, spec = _settings(root), load_spec()
    tpl = _template(spec)
    t0 = time.monotonic()
    horizon = parse_duration_seconds(spec.label.horizon) * 1000
    start = END_MS - rows * RATE_MS
    for b, lo in enumerate(range(0, rows, chunk)):
        t, truth = _scored(tpl, lo, min(rows, lo + chunk), start)
        commit_batch(s, "scores", t, "bench-scores", b)
        lab = _labels_for(t, truth, b)
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
    L._mark(s, open_table(s, L.TABLE), L.APP_SCORES, open_table(s, "scores").version())
    L._mark(s, open_table(s, L.TABLE), L.APP_LABELS, open_table(s, "labels").version())
    L._mark(s, open_table(s, L.TABLE), L.APP_CUT, END_MS - horizon)
    built = round(time.monotonic() - t0, 1)
    # the champion (trained on generator history, like `rtml bootstrap`) and its reference profile
    from rtml.pipelines.history import history_frame

    learner, metrics, X, y = train_initial(spec, history_frame(spec, TEMPLATE, 5, None))
    profile = build_profile(X, spec, scores=learner.score(X), labels=y)
    holdout = {m: metrics[f"holdout_{m}"] for m in ("precision", "recall", "f1")}
    with open(Path(root) / "champion.pkl", "wb") as fh:
        pickle.dump({"learner": learner, "profile": profile, "holdout": holdout}, fh)
    return {"rows": rows, "chunk": chunk, "commits": len(range(0, rows, chunk)), "build_s": built}


def _champion(root: str) -> tuple:
    from rtml.models.lifecycle.registry import _pyfunc_class

    with open(Path(root) / "champion.pkl", "rb") as fh:
        saved = pickle.load(fh)
    return _pyfunc_class()(saved["learner"], load_spec().model_inputs), saved


def arrive(root: str, rows: int, new: int) -> dict:
    s, spec = _settings(root), load_spec()
    tpl = _template(spec)
    t, truth = _scored(tpl, rows, rows + new, END_MS - rows * RATE_MS)
    labels = _labels_for(t, truth, 10_000)
    base, t0 = _rss_mb(), time.monotonic()
    commit_batch(s, "scores", t, "bench-scores", 10_000)
    append(s, "labels", labels, {INGEST_APP: 10_000})
    return {"arrive_s": round(time.monotonic() - t0, 3), "base_rss_mb": base}


def labels(root: str, rows: int, new: int) -> dict:
    s, spec = _settings(root), load_spec()
    base, t0 = _rss_mb(), time.monotonic()
    out = L.refresh_labelled(s, spec)
    return {"labels_s": round(time.monotonic() - t0, 3), "base_rss_mb": base, "refresh": out}


def retrain(root: str, rows: int, new: int) -> dict:
    from rtml.expectations.training import quarantined_ids
    from rtml.models.training.challenger import select_window, train_challenger
    from rtml.models.training.retrain import evaluate, policy_of

    s, spec = _settings(root), load_spec()
    champ, _ = _champion(root)
    base, t0 = _rss_mb(), time.monotonic()
    version = L.labelled_version(s)
    frame = L.read_labelled(s, WATERMARK_MS, version)
    excluded = quarantined_ids(s, spec.event_id)
    if excluded:
        frame = frame[~frame[spec.event_id].astype(str).isin(excluded)]
    read_s = time.monotonic() - t0
    window = select_window(frame, spec, s, WATERMARK_MS, now_ms=END_MS + new * RATE_MS)
    learner = train_challenger(champ, window, spec, s.retrain.mode, family=s.model.family)
    decision = evaluate(policy_of(s), spec, champ, learner, window)
    return {
        "retrain_s": round(time.monotonic() - t0, 3),
        "retrain_read_s": round(read_s, 3),
        "base_rss_mb": base,
        "window": {
            k: window.info[k] for k in ("new_rows", "train_rows", "holdout_rows", "holdout_positives")
        },
        "labelled_table_version": version,
        "decision": decision.outcome,
    }


def drift(root: str, rows: int, new: int) -> dict:
    from rtml.models.monitoring.drift import input_findings, performance_findings
    from rtml.pipelines.sinks import read_sink

    s, spec = _settings(root), load_spec()
    _, saved = _champion(root)
    cfg = s.drift
    now = END_MS + new * RATE_MS + 50  # the newest scored_at: the drift check's clock
    base, t0 = _rss_mb(), time.monotonic()
    scores = read_sink(s, "scores", now - parse_duration_seconds(cfg.window) * 1000)
    fb = L.read_labelled(s, now - parse_duration_seconds(cfg.performance_window) * 1000)
    fb = fb[(fb["model_version"].astype(str) == "1") & fb[spec.label.field].notna()]
    read_s = time.monotonic() - t0
    features = cfg.features or [f.name for f in spec.features]
    found, _ = input_findings(saved["profile"], scores, features, cfg, cfg.window)
    perf, _ = performance_findings(fb, spec.label.field, saved["holdout"], cfg, cfg.performance_window)
    return {
        "drift_s": round(time.monotonic() - t0, 3),
        "drift_read_s": round(read_s, 3),
        "base_rss_mb": base,
        "drift_rows": [len(scores), len(fb)],
        "findings": len(found) + len(perf),
    }


def _child(step: str, root: Path, rows: int, new: int, chunk: int = CHUNK) -> dict:
    args = {"--dir": root, "--rows": rows, "--new": new, "--chunk": chunk, "--child": step}
    cmd = [sys.executable, __file__, *(str(x) for kv in args.items() for x in kv)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{step} at {rows} rows failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _snapshot(src: Path, dst: Path) -> None:
    """A copy of the tables in hard links (instant): Delta never rewrites a file, it adds new ones."""
    shutil.rmtree(dst, ignore_errors=True)
    subprocess.run(["cp", "-al", str(src), str(dst)], check=True)


def _median(runs: list[dict], step: str) -> dict:
    """The run with the median wall time, plus every run's time and the largest peak RSS."""
    ordered = sorted(runs, key=lambda r: r[f"{step}_s"])
    return {
        **ordered[len(ordered) // 2],
        "runs_s": [r[f"{step}_s"] for r in runs],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--new", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each step per size (median reported)")
    ap.add_argument("--chunk", type=int, default=CHUNK, help="history rows per commit (per table)")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--child", choices=["build", *STEPS])
    ap.add_argument("--rows", type=int)
    args = ap.parse_args()
    if args.child:
        extra = {"chunk": args.chunk} if args.child == "build" else {}
        out = globals()[args.child](args.dir, args.rows, args.new, **extra)
        print(json.dumps({**out, "peak_rss_mb": _rss_mb()}))
        return
    base = Path(args.dir or tempfile.mkdtemp(prefix="rtml-scale-"))
    sizes = [int(x) for x in args.sizes.split(",")]
    res = {rows: {"rows": rows, "new": args.new} for rows in sizes}
    runs: dict = {(rows, step): [] for rows in sizes for step in STEPS}
    for rows in sizes:
        res[rows]["build"] = _child("build", base / f"h{rows}", rows, args.new, args.chunk)
        res[rows]["arrive"] = _child("arrive", base / f"h{rows}", rows, args.new)
        _snapshot(base / f"h{rows}", base / f"h{rows}.arrived")
    # the sizes interleaved, each step repeated: the machine's load falls on both alike
    for rep in range(args.repeat):
        for rows in sizes:
            if rep:  # the refresh again from the same state: the tables as the new data left them
                shutil.rmtree(base / f"h{rows}")
                _snapshot(base / f"h{rows}.arrived", base / f"h{rows}")
            runs[rows, "labels"].append(_child("labels", base / f"h{rows}", rows, args.new))
    for _ in range(args.repeat):
        for step in ("retrain", "drift"):  # read-only on the tables
            for rows in sizes:
                runs[rows, step].append(_child(step, base / f"h{rows}", rows, args.new))
    for rows in sizes:
        for step in STEPS[1:]:
            res[rows][step] = _median(runs[rows, step], step)
        print(json.dumps(res[rows]), file=sys.stderr, flush=True)
    results = [res[rows] for rows in sizes]
    out: dict = {"results": results}
    if len(results) == 2:
        a, b = results
        out["ratios"] = {
            f"{step}_{k}": round(b[step][key] / a[step][key], 2) if a[step][key] else None
            for step in STEPS
            for k, key in (("s", f"{step}_s"), ("peak_rss", "peak_rss_mb"))
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
