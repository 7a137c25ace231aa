"""Retrain benchmark, JSON on stdout.

1. One incremental retrain (read window from the labelled store, train the challenger, judge both
   on the holdout) on the same 20k-row new window, with 10k vs 1M rows of older labelled history;
   next to a full retrain over the whole history + window.
2. Successive incremental retrains on the generator's drifting stream: the champion's F1 on each
   round's fresh post-drift holdout, before and after promotion.

    python benchmarks/retrain.py [--big 1000000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtml.features.featurise import EVENT_MS, featurise_history  # noqa: E402
from rtml.infra.config.settings import load_settings  # noqa: E402
from rtml.infra.config.spec import load_spec  # noqa: E402
from rtml.models.lifecycle.registry import _pyfunc_class  # noqa: E402
from rtml.models.training.bootstrap import train_initial  # noqa: E402
from rtml.models.training.challenger import select_window, train_challenger  # noqa: E402
from rtml.models.training.retrain import evaluate, holdout_f1, policy_of  # noqa: E402
from rtml.pipelines.generator import CardTransactionGenerator  # noqa: E402
from rtml.pipelines.labelled import read_labelled  # noqa: E402


def labelled_frame(n: int, seed: int, start_ms: int, drift_at: int | None = None) -> pd.DataFrame:
    gen = CardTransactionGenerator(seed=seed, start_ms=start_ms, drift_at=drift_at)
    frame = featurise_history(gen.batch(n).rename(columns={"event_time_ms": EVENT_MS}), load_spec())
    frame["event_date"] = pd.to_datetime(frame[EVENT_MS], unit="ms", utc=True).dt.strftime("%Y-%m-%d")
    return frame


def write_store(root: Path, frames: list[pd.DataFrame]) -> None:
    """The labelled Delta table as the labels flow leaves it (every row labelled)."""
    import pyarrow as pa

    from rtml.pipelines.labelled import STATE, TABLE
    from rtml.pipelines.tables import append

    settings = load_settings(overrides={"state_dir": str(root)}, use_default_file=False)
    frame = pd.concat(frames, ignore_index=True).drop(columns=["event_date"]).assign(**{STATE: "labelled"})
    append(settings, TABLE, pa.Table.from_pandas(frame, preserve_index=False), {})


def timed_retrain(settings, spec, champion, watermark: int) -> dict:  # noqa: ANN001
    t0 = time.monotonic()
    window = select_window(read_labelled(settings, watermark), spec, settings, watermark)
    t1 = time.monotonic()
    learner = train_challenger(champion, window, spec, "incremental")
    t2 = time.monotonic()
    decision = evaluate(policy_of(settings), spec, champion, learner, window)
    t3 = time.monotonic()
    return {
        "seconds": round(t3 - t0, 3),
        "read_select_s": round(t1 - t0, 3),
        "train_s": round(t2 - t1, 3),
        "evaluate_s": round(t3 - t2, 3),
        "window_rows": len(window.train) + len(window.holdout),
        "decision": decision.outcome,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", type=int, default=1_000_000)
    ap.add_argument("--window", type=int, default=20_000)
    args = ap.parse_args()
    spec = load_spec()
    day = 86_400_000
    base = int(time.time() * 1000) - 30 * day
    learner, _, X, _ = train_initial(spec, labelled_frame(20_000, 3, base - 5 * day))
    champion = _pyfunc_class()(learner, list(X.columns))
    result: dict = {"incremental": {}}
    for n_hist in (10_000, args.big):
        root = Path(tempfile.mkdtemp(prefix="rtml-retrain-bench-"))
        settings = load_settings(use_default_file=False, overrides={"state_dir": root})
        # history at 2 events/s of simulated time ends before the watermark; the window comes after
        hist = labelled_frame(n_hist, 5, base)
        watermark = int(hist[EVENT_MS].max())
        window = labelled_frame(args.window, 6, watermark + 60_000)
        write_store(root, [hist, window])
        runs = [timed_retrain(settings, spec, champion, watermark) for _ in range(3)]
        result["incremental"][f"history_{n_hist}"] = min(runs, key=lambda r: r["seconds"])
        if n_hist == args.big:
            t0 = time.monotonic()
            all_rows = read_labelled(settings)
            full_settings = load_settings(
                use_default_file=False,
                overrides={"state_dir": root, "retrain": {"mode": "full", "sliding_window": "3650d"}},
            )
            w = select_window(all_rows, spec, full_settings, watermark)
            train_challenger(champion, w, spec, "full")
            result["full_retrain"] = {
                "history_rows": n_hist,
                "train_rows": len(w.train),
                "seconds": round(time.monotonic() - t0, 3),
            }
    small, big = (result["incremental"][f"history_{n}"]["seconds"] for n in (10_000, args.big))
    result["incremental_ratio_big_over_small"] = round(big / small, 3)

    # successive retrains after a drift
    rounds = []
    stream = labelled_frame(60_000, 9, base + 10 * day, drift_at=0)
    settings = load_settings(
        use_default_file=False,
        overrides={"state_dir": tempfile.mkdtemp(), "promotion": {"min_holdout": 500, "min_positives": 10}},
    )
    current = champion
    chunk = 10_000
    for i in range(0, len(stream) - chunk, chunk):
        seen = stream.iloc[: i + chunk]
        next_slice = stream.iloc[i + chunk : i + 2 * chunk]  # unseen data: how the champion does next
        watermark = int(stream[EVENT_MS].iloc[i - 1]) if i else int(stream[EVENT_MS].min()) - 1
        window = select_window(seen, spec, settings, watermark)
        new = train_challenger(current, window, spec, "incremental")
        decision = evaluate(policy_of(settings), spec, current, new, window)
        f1_before = holdout_f1(current, next_slice, spec)
        if decision.promote:
            current = _pyfunc_class()(new, current.columns)
        rounds.append(
            {
                "round": len(rounds) + 1,
                "decision": decision.outcome,
                "champion_f1_on_next_slice_before": round(f1_before, 4),
                "champion_f1_on_next_slice_after": round(holdout_f1(current, next_slice, spec), 4),
            }
        )
    result["drift_rounds"] = rounds
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
