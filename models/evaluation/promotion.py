"""Champion/challenger promotion for binary decisions: precision, recall and F1 (pure logic).

Both models' decisions are compared on the same held-out labelled slice. The challenger is promoted
iff it beats the champion on precision **and** recall **and** F1, each in at least
``policy.confidence`` of the paired bootstrap resamples of that slice (see
:func:`rtml.models.evaluation.decision.verdict`). Too small a holdout, or too few positives, means no
decision. F1 is 2TP / (2TP + FP + FN), so a model that flags nothing has recall 0, F1 0 and an
undefined precision; an undefined metric is never a free win: a challenger's rejects it, and a
champion's undefined precision is replaced by ``policy.precision_floor`` (at least the holdout's
positive rate). Matching a champion's perfect 1.0 counts as beating it.

>>> import numpy as np
>>> y = np.array([1] * 30 + [0] * 570)
>>> champ = np.r_[np.ones(20), np.zeros(10), np.zeros(560), np.ones(10)]
>>> chall = np.r_[np.ones(28), np.zeros(2), np.zeros(565), np.ones(5)]
>>> d = decide(PromotionPolicy(min_holdout=100, min_positives=10), y, champ, chall)
>>> d.outcome, round(d.deltas["f1"], 3), d.probabilities["recall"] >= 0.9
('promote', 0.222, True)
"""

from __future__ import annotations

import numpy as np

from rtml.models.evaluation.decision import Decision, PromotionPolicy, bootstrap_weights, verdict

__all__ = [
    "METRICS",
    "Decision",
    "PromotionPolicy",
    "bootstrap_weights",
    "decide",
    "metrics_from_predictions",
]

METRICS = ("precision", "recall", "f1")
LOWER_IS_BETTER = dict.fromkeys(METRICS, False)


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)  # 0 when nothing flagged
    return {"precision": precision, "recall": recall, "f1": f1}


def metrics_from_predictions(
    y: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """precision/recall/F1 of the positive class; weights (B x n) give B bootstrap replicates at once."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(pred).astype(bool)
    w = np.ones((1, len(y))) if weights is None else weights
    tp = w @ (y & pred)
    fp = w @ (~y & pred)
    fn = w @ (y & ~pred)
    return _prf(tp.astype(float), fp.astype(float), fn.astype(float))


def decide(
    policy: PromotionPolicy, y: np.ndarray, champion_pred: np.ndarray, challenger_pred: np.ndarray
) -> Decision:
    """Compare champion and challenger decisions on the same holdout labels."""
    y = np.asarray(y).astype(int)
    n, positives = int(len(y)), int(y.sum())
    if n < policy.min_holdout:
        return Decision(
            "no_decision", f"holdout has {n} rows, fewer than the minimum {policy.min_holdout}", n, positives
        )
    if positives < policy.min_positives:
        return Decision(
            "no_decision",
            f"holdout has {positives} positives, fewer than the minimum {policy.min_positives}",
            n,
            positives,
        )
    champ = {k: float(v[0]) for k, v in metrics_from_predictions(y, champion_pred).items()}
    chall = {k: float(v[0]) for k, v in metrics_from_predictions(y, challenger_pred).items()}
    weights = bootstrap_weights(policy, n)
    boot_champ = metrics_from_predictions(y, champion_pred, weights)
    boot_chall = metrics_from_predictions(y, challenger_pred, weights)
    base = {"holdout_n": n, "holdout_positives": positives}
    # a champion that flagged nothing: the challenger's precision must reach the floor (and at least
    # the positive rate, what flagging at random achieves), per resample
    rate = (weights @ y) / weights.sum(1)
    bars = {
        "precision": (max(policy.precision_floor, positives / n), np.maximum(policy.precision_floor, rate))
    }
    ceilings = dict.fromkeys(METRICS, 1.0)
    return verdict(
        policy, METRICS, LOWER_IS_BETTER, champ, chall, boot_champ, boot_chall, base, bars, ceilings
    )
