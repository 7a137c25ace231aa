"""Label-consistency gate benchmark: detection of poisoned labels, false blocks of clean windows. JSON.

Champions are bootstrapped in-process as ``rtml bootstrap`` does (generated history, the default
learner, reference profile with its label table). Each labelled window is a fresh stretch of the
generator's stream, featurised as the labelled store keeps it, at a random hour (the fraud rate
follows the hour), judged by the real gate (:func:`rtml.expectations.gate.validate`, Great
Expectations) with a suite holding only ``expect_labels_to_agree_with_champion`` and the default
``quality.label_*`` settings. Kinds of window:

- ``clean``: labels as generated.
- ``negatives_5pct``: 5% of the negatives flipped to positive (the positive rate stays in bounds).
- ``swap_5pct``: rate-preserving swap flipping 5% of all labels (2.5% positive -> negative and as many
  negative -> positive). The default stream has about 1% fraud, too few positives to swap 5% of
  labels, so these windows come from the same generator with ``fraud_rate=0.1`` (2.5-20% positives).
- ``swap_half_positives``: half of the positives swapped with as many negatives, default stream
  (about 1-2% of labels flipped): the weak case, reported, not required.
- ``drift_clean``: clean labels after the generator's concept drift (the champion misses the new
  fraud): what the tolerance must let through so that a drift can still be retrained on.

    python benchmarks/label_gate.py [--batches 40] [--sizes 2000 5000 20000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtml.expectations.gate import validate  # noqa: E402
from rtml.expectations.suites import label_expectation  # noqa: E402
from rtml.features.featurise import EVENT_MS, featurise_history  # noqa: E402
from rtml.infra.config.settings import load_settings  # noqa: E402
from rtml.infra.config.spec import load_spec  # noqa: E402
from rtml.models.lifecycle.registry import _pyfunc_class  # noqa: E402
from rtml.models.monitoring.profile import build_profile  # noqa: E402
from rtml.models.training.bootstrap import train_initial  # noqa: E402
from rtml.pipelines.generator import CardTransactionGenerator  # noqa: E402

HOUR, DAY = 3_600_000, 86_400_000
ANCHOR_MS = 1_795_996_800_000  # 2026-11-30T00:00Z; only the label expectation runs, so event age is moot
KINDS = ("clean", "negatives_5pct", "swap_5pct", "swap_half_positives", "drift_clean")
REQUIRED = {"negatives_5pct": ">= 0.95 detected", "swap_5pct": ">= 0.95 detected", "clean": "<= 0.05 blocked"}


def labelled(n: int, seed: int, start_ms: int, drift_at: int | None = None, fraud_rate: float = 0.015):
    gen = CardTransactionGenerator(seed=seed, start_ms=start_ms, drift_at=drift_at, fraud_rate=fraud_rate)
    return featurise_history(gen.batch(n).rename(columns={"event_time_ms": EVENT_MS}), load_spec())


def champion(seed: int, now_ms: int, n: int = 50_000) -> tuple:
    """Bootstrap as `rtml bootstrap` does: the model and its reference profile."""
    spec = load_spec()
    history = labelled(n, seed, now_ms - 4 * DAY - seed * 5 * HOUR)
    learner, _, X, y = train_initial(spec, history, seed=seed)
    profile = build_profile(X, spec, scores=learner.score(X), labels=y)
    return _pyfunc_class()(learner, list(X.columns)), profile


def flip(frame: pd.DataFrame, kind: str, rng: np.random.Generator) -> tuple[pd.DataFrame, int]:
    """The poisoned copy of a window and how many labels were flipped."""
    y = frame["is_fraud"].to_numpy().copy()
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if kind == "negatives_5pct":
        to_pos, to_neg = rng.choice(neg, int(round(0.05 * len(neg))), replace=False), pos[:0]
    elif kind in ("swap_5pct", "swap_half_positives"):
        k = int(round(0.025 * len(y))) if kind == "swap_5pct" else len(pos) // 2
        k = min(k, len(pos))
        to_neg, to_pos = rng.choice(pos, k, replace=False), rng.choice(neg, k, replace=False)
    else:
        return frame, 0
    y[to_pos], y[to_neg] = 1, 0
    return frame.assign(is_fraud=y), len(to_pos) + len(to_neg)


def window(kind: str, n: int, seed: int, now_ms: int, rng: np.random.Generator) -> pd.DataFrame:
    start = now_ms - int(rng.integers(2, 48)) * HOUR - n * 500  # a random hour of the last two days
    if kind == "swap_5pct":
        return labelled(n, seed, start, fraud_rate=0.1)
    return labelled(n, seed, start, drift_at=0 if kind == "drift_clean" else None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=40, help="windows per kind and size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2_000, 5_000, 20_000])
    ap.add_argument("--champions", type=int, default=4)
    args = ap.parse_args()
    spec = load_spec()
    suites = Path(tempfile.mkdtemp(prefix="rtml-label-gate-")) / spec.name
    suites.mkdir(parents=True)
    (suites / "training_batch.json").write_text(
        json.dumps({"name": f"{spec.name}.training_batch", "expectations": [label_expectation(spec)]})
    )
    settings = load_settings(use_default_file=False, overrides={"quality": {"suites_dir": suites.parent}})
    now_ms = ANCHOR_MS  # fixed: the same hours and weekdays (fraud rates, time features) every run
    champions = [champion(101 + i, now_ms) for i in range(args.champions)]
    rng = np.random.default_rng(2026)
    cells: dict[str, dict] = {}
    seconds: list[float] = []
    for kind in KINDS:
        for n in args.sizes:
            blocked, flipped, positives = 0, [], []
            for b in range(args.batches):
                model, profile = champions[b % len(champions)]
                frame, k = flip(window(kind, n, 10_000 + 97 * b + n, now_ms, rng), kind, rng)
                t0 = time.monotonic()
                result = validate(
                    frame, "training_batch", spec, settings, profile, render=False, champion=model
                )
                seconds.append(time.monotonic() - t0)
                assert not result.skipped, result.skipped
                blocked += not result.passed
                flipped.append(k / n)
                positives.append(float(frame["is_fraud"].mean()))
            cells[f"{kind}/{n}"] = {
                "kind": kind,
                "rows": n,
                "batches": args.batches,
                "blocked": blocked,
                "blocked_share": round(blocked / args.batches, 4),
                "labels_flipped_share_mean": round(float(np.mean(flipped)), 4),
                "labels_flipped_share_min": round(float(np.min(flipped)), 4),
                "positive_rate_range": [round(min(positives), 4), round(max(positives), 4)],
            }
    verdict = {}
    for kind, rule in REQUIRED.items():
        shares = [c["blocked_share"] for c in cells.values() if c["kind"] == kind]
        ok = min(shares) >= 0.95 if "detected" in rule else max(shares) <= 0.05
        verdict[kind] = {"rule": rule, "worst": min(shares) if "detected" in rule else max(shares), "ok": ok}
    q = settings.quality
    print(
        json.dumps(
            {
                "settings": {k: v for k, v in q.model_dump().items() if k.startswith("label_")},
                "champions": args.champions,
                "cells": cells,
                "required": verdict,
                "gate_seconds_median": round(float(np.median(seconds)), 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
