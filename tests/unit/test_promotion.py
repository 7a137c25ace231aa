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


def test_champion_that_flags_nothing_is_judged_against_the_precision_floor() -> None:
    # its precision is undefined: not a free win, the challenger must reach promotion.precision_floor
    d = decide(POLICY, _y(), np.zeros(1000, dtype=int), _pred(30, 10))  # precision 0.75 >= 0.5
    assert d.promote and "judged against the floor 0.5000" in d.reason
    assert np.isnan(d.champion["precision"]) and d.champion["recall"] == 0 and d.champion["f1"] == 0
    flooded = decide(POLICY, _y(), np.zeros(1000, dtype=int), _pred(40, 900))  # flags nearly everything
    assert flooded.outcome == "reject" and "not better on precision" in flooded.reason


def test_weak_challenger_does_not_beat_a_champion_with_undefined_metrics() -> None:
    """The README retrain of issue 17: P/R/F1 0.20/0.07/0.105 on 28 positives over a silent champion."""
    y = np.r_[np.ones(28), np.zeros(1972)].astype(int)
    weak = np.r_[np.ones(2), np.zeros(26), np.ones(8), np.zeros(1964)]
    for policy in (PromotionPolicy(), PromotionPolicy(precision_floor=0.0, bootstrap_samples=2000)):
        d = decide(policy, y, np.zeros(2000), weak)
        assert (round(d.challenger["precision"], 2), round(d.challenger["f1"], 3)) == (0.2, 0.105)
        assert d.outcome == "reject", d.reason
    # without the floor, only the noise rule stops it: 2 true positives are no evidence at 90%
    assert "within noise" in d.reason and d.probabilities["recall"] < 0.9


def test_within_noise_is_rejected_with_that_reason() -> None:
    # one more true positive of 40 and one fewer false alarm: better on all three, but not convincingly
    d = decide(POLICY, _y(), _pred(30, 10), _pred(31, 9))
    assert all(d.deltas[m] > 0 for m in ("precision", "recall", "f1"))
    assert d.outcome == "reject" and "within noise" in d.reason
    assert min(d.probabilities.values()) < POLICY.confidence
    rows = {r["metric"]: r for r in d.table()}
    assert rows["recall"]["p_better"] == round(d.probabilities["recall"], 4)


def test_a_tied_metric_is_not_a_win_but_a_perfect_one_is() -> None:
    d = decide(POLICY, _y(), _pred(30, 20), _pred(30, 5))  # same recall, fewer false alarms
    assert d.outcome == "reject" and "recall ties" in d.reason
    d = decide(POLICY, _y(), _pred(40, 30), _pred(40, 5))  # recall 1.0 for both: cannot be beaten
    assert d.promote and d.probabilities["recall"] == 1.0


def test_confidence_is_data() -> None:
    champion, challenger = _pred(30, 10), _pred(33, 8)
    lenient = decide(
        PromotionPolicy(min_holdout=100, min_positives=10, confidence=0.5), _y(), champion, challenger
    )
    strict = decide(
        PromotionPolicy(min_holdout=100, min_positives=10, confidence=0.99), _y(), champion, challenger
    )
    assert lenient.promote and strict.outcome == "reject"
    assert lenient.probabilities == strict.probabilities


def test_bootstrap_replicates_match_direct_computation() -> None:
    y, p = _y(), _pred(30, 10)
    direct = metrics_from_predictions(y, p)
    ones = metrics_from_predictions(y, p, np.ones((3, len(y))))
    assert np.allclose(ones["f1"], direct["f1"][0])


def test_regression_uses_the_same_confidence_rule() -> None:
    from rtml.models.evaluation.promotion_regression import decide_regression

    rng = np.random.default_rng(1)
    y = rng.normal(100, 10, 2000)
    champion = y + rng.normal(0, 5, 2000)
    clearly = decide_regression(POLICY, y, champion, y + rng.normal(0, 2, 2000))
    assert clearly.promote and min(clearly.probabilities.values()) >= POLICY.confidence
    other = decide_regression(POLICY, y, champion, y + rng.normal(0, 5, 2000))  # as good, other errors
    assert other.outcome == "reject" and ("within noise" in other.reason or "not better" in other.reason)
    assert min(other.probabilities.values()) < POLICY.confidence
    constant = decide_regression(POLICY, np.full(200, 3.0), np.full(200, 3.5), np.full(200, 3.1))
    assert constant.outcome == "reject" and "undefined" in constant.reason  # R^2 of a constant target


def test_window_keeps_a_validation_split_before_the_holdout() -> None:
    import pandas as pd

    from rtml.features.featurise import EVENT_MS
    from rtml.infra.config.settings import Settings
    from rtml.infra.config.spec import load_spec
    from rtml.models.training.challenger import select_window

    frame = pd.DataFrame({EVENT_MS: np.arange(1000), "is_fraud": (np.arange(1000) % 20 == 0).astype(int)})
    s = Settings(promotion={"holdout_fraction": 0.25, "validation_fraction": 0.2})
    w = select_window(frame, load_spec(), s, watermark_ms=-1, now_ms=10_000)
    assert (len(w.train), len(w.validation), len(w.holdout)) == (600, 150, 250)
    assert w.train[EVENT_MS].max() < w.validation[EVENT_MS].min() < w.holdout[EVENT_MS].min()
    assert len(w.labelled) == 1000 and w.info["validation_rows"] == 150


def test_window_after_rejected_rounds_is_bounded_in_event_time() -> None:
    import pandas as pd

    from rtml.features.featurise import EVENT_MS
    from rtml.infra.config.settings import Settings
    from rtml.infra.config.spec import load_spec
    from rtml.models.training.challenger import select_window

    hour = 3_600_000  # ten hours of labelled events, one a minute; the champion's watermark at 0
    frame = pd.DataFrame(
        {EVENT_MS: np.arange(600) * 60_000, "is_fraud": (np.arange(600) % 20 == 0).astype(int)}
    )
    s = Settings(retrain={"window_limit": "2h"})
    w = select_window(frame, load_spec(), s, watermark_ms=0)
    assert w.info["new_rows"] == 120 and w.info["start_ms"] == 599 * 60_000 - 2 * hour
    assert w.labelled[EVENT_MS].min() > 599 * 60_000 - 2 * hour
    wide = select_window(frame, load_spec(), Settings(), watermark_ms=0)  # 7 days: the watermark rules
    assert wide.info["new_rows"] == 599 and wide.info["start_ms"] == 0


def test_interval_is_defined_when_the_champion_metric_is_undefined_in_some_resamples() -> None:
    # one false positive, no true one: precision 0 on the holdout, undefined in every resample that
    # leaves that row out; the interval is taken on the values judged (the floor stands in there)
    d = decide(POLICY, _y(), _pred(0, 1), _pred(12, 6))
    lo, hi = d.intervals["precision"]
    assert np.isfinite(lo) and np.isfinite(hi) and lo <= hi
    assert "n/a" not in d.markdown("1", "2").split("| precision |")[1].splitlines()[0]
