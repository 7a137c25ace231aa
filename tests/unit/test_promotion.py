"""Promotion policy: pure decision logic on fixed predictions."""

from __future__ import annotations

import numpy as np
import pytest

from rtml.models.evaluation.promotion import PromotionPolicy, decide, metrics_from_predictions

POLICY = PromotionPolicy(min_holdout=100, min_positives=10, bootstrap_samples=100)


def _y() -> np.ndarray:
    return np.r_[np.ones(40), np.zeros(960)].astype(int)


def _pred(tp: int, fp: int) -> np.ndarray:
    """Predictions with tp true positives (of 40) and fp false positives (of 960)."""
    return np.r_[np.ones(tp), np.zeros(40 - tp), np.ones(fp), np.zeros(960 - fp)].astype(int)


def test_better_on_all_three_is_promoted_with_intervals() -> None:
    d = decide(POLICY, _y(), _pred(20, 20), _pred(30, 10))
    assert d.promote
    assert all(d.deltas[m] > 0 for m in ("precision", "recall", "f1"))
    lo, hi = d.intervals["f1"]
    assert lo <= d.deltas["f1"] <= hi
    assert {r["metric"] for r in d.table()} == {"precision", "recall", "f1"}


@pytest.mark.parametrize(
    ("champion", "challenger", "worse"),
    [
        (_pred(20, 10), _pred(30, 40), "precision"),  # more recall, worse precision
        (_pred(30, 20), _pred(25, 5), "recall"),  # better precision, worse recall
        (_pred(30, 10), _pred(38, 60), "f1"),  # recall up, precision and F1 down
    ],
)
def test_worse_on_any_metric_is_rejected(champion: np.ndarray, challenger: np.ndarray, worse: str) -> None:
    d = decide(POLICY, _y(), champion, challenger)
    assert d.outcome == "reject"
    assert worse in d.reason
    assert d.deltas[worse] < 0


def test_tie_is_rejected() -> None:
    p = _pred(20, 10)
    assert decide(POLICY, _y(), p, p.copy()).outcome == "reject"


def test_margin_is_respected() -> None:
    d = decide(
        PromotionPolicy(margin=0.05, min_holdout=100, min_positives=10), _y(), _pred(20, 20), _pred(21, 19)
    )
    assert d.outcome == "reject" and "+ 0.05" in d.reason


def test_too_few_positives_or_rows_means_no_decision() -> None:
    y = np.r_[np.ones(5), np.zeros(995)].astype(int)
    d = decide(POLICY, y, np.zeros(1000), y)
    assert d.outcome == "no_decision" and "5 positives" in d.reason
    d = decide(POLICY, _y()[:50], _pred(20, 20)[:50], _pred(30, 10)[:50])
    assert d.outcome == "no_decision" and "50 rows" in d.reason


def test_nan_challenger_metric_is_not_promoted() -> None:
    d = decide(POLICY, _y(), _pred(20, 20), np.zeros(1000, dtype=int))  # flags nothing: precision undefined
    assert d.outcome == "reject" and "undefined" in d.reason


def test_champion_that_flags_nothing_can_be_replaced() -> None:
    d = decide(POLICY, _y(), np.zeros(1000, dtype=int), _pred(30, 10))
    assert d.promote and "counted as 0" in d.reason
    assert all(r["delta"] is not None and r["delta"] > 0 for r in d.table())


def test_bootstrap_replicates_match_direct_computation() -> None:
    y, p = _y(), _pred(30, 10)
    direct = metrics_from_predictions(y, p)
    ones = metrics_from_predictions(y, p, np.ones((3, len(y))))
    assert np.allclose(ones["f1"], direct["f1"][0])
