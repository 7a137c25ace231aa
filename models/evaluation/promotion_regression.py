"""Champion/challenger policy for the regression task (pure logic; thresholds are data).

Both models predict the same held-out slice. The challenger is promoted iff its RMSE and MAE are
lower and its R^2 higher than the champion's (by more than ``margin``), each in at least
``policy.confidence`` of the paired bootstrap resamples of that slice -- the same rule as
classification's precision/recall/F1 (:func:`rtml.models.evaluation.decision.verdict`). Fewer than
``min_holdout`` rows: no decision. Deltas are challenger - champion (negative is better for RMSE and
MAE); an undefined R^2 (a constant holdout target) is no evidence either way.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = rng.normal(100, 10, 1000)
>>> champion, challenger = y + rng.normal(0, 5, 1000), y + rng.normal(0, 2, 1000)
>>> d = decide_regression(PromotionPolicy(min_holdout=100), y, champion, challenger)
>>> d.outcome, d.metrics, d.deltas["rmse"] < 0
('promote', ('rmse', 'mae', 'r2'), True)
"""

from __future__ import annotations

import numpy as np

from rtml.models.evaluation.decision import Decision, PromotionPolicy, bootstrap_weights, verdict

METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = {"rmse": True, "mae": True, "r2": False}


def _metrics(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """RMSE, MAE, R^2 under row weights w (B x n): B bootstrap replicates at once."""
    total = w.sum(1)
    err = pred[None, :] - y[None, :]
    mse = (w * err**2).sum(1) / total
    mean_y = (w * y[None, :]).sum(1) / total
    var = (w * (y[None, :] - mean_y[:, None]) ** 2).sum(1) / total
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(var > 0, 1 - mse / var, np.nan)
    return {"rmse": np.sqrt(mse), "mae": (w * np.abs(err)).sum(1) / total, "r2": r2}


def decide_regression(
    policy: PromotionPolicy, y: np.ndarray, champion_pred: np.ndarray, challenger_pred: np.ndarray
) -> Decision:
    """Compare champion and challenger predictions on the same holdout targets."""
    y = np.asarray(y, dtype=float)
    n = int(len(y))
    if n < policy.min_holdout:
        return Decision(
            "no_decision",
            f"holdout has {n} rows, fewer than the minimum {policy.min_holdout}",
            n,
            0,
            metrics=METRICS,
        )
    champ_pred, chall_pred = np.asarray(champion_pred, float), np.asarray(challenger_pred, float)
    one = np.ones((1, n))
    champ = {k: float(v[0]) for k, v in _metrics(y, champ_pred, one).items()}
    chall = {k: float(v[0]) for k, v in _metrics(y, chall_pred, one).items()}
    weights = bootstrap_weights(policy, n).astype(float)
    boot_champ, boot_chall = _metrics(y, champ_pred, weights), _metrics(y, chall_pred, weights)
    base = {"holdout_n": n, "holdout_positives": 0}
    return verdict(policy, METRICS, LOWER_IS_BETTER, champ, chall, boot_champ, boot_chall, base)
