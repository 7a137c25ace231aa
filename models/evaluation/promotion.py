"""Champion/challenger promotion policy (pure logic; thresholds are data).

Both models are judged on the same held-out labelled slice. The challenger is promoted iff each of
precision, recall and F1 is >= the champion's + margin and at least one is strictly better. Too
small a holdout, or too few positives, means no decision; a challenger with an undefined (NaN) metric
is never promoted, while a champion's undefined metric (it flagged nothing) counts as 0.

>>> import numpy as np
>>> y = np.array([1] * 30 + [0] * 570)
>>> champ = np.r_[np.ones(20), np.zeros(10), np.zeros(560), np.ones(10)]
>>> chall = np.r_[np.ones(28), np.zeros(2), np.zeros(565), np.ones(5)]
>>> d = decide(PromotionPolicy(min_holdout=100, min_positives=10), y, champ, chall)
>>> d.outcome, round(d.deltas["f1"], 3)
('promote', 0.222)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

METRICS = ("precision", "recall", "f1")


@dataclass(frozen=True)
class PromotionPolicy:
    margin: float = 0.0
    min_holdout: int = 500
    min_positives: int = 20
    bootstrap_samples: int = 200
    confidence: float = 0.95
    seed: int = 0


@dataclass
class Decision:
    outcome: Literal["promote", "reject", "no_decision"]
    reason: str
    holdout_n: int
    holdout_positives: int
    champion: dict[str, float] = field(default_factory=dict)
    challenger: dict[str, float] = field(default_factory=dict)
    deltas: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    metrics: tuple[str, ...] = METRICS

    @property
    def promote(self) -> bool:
        return self.outcome == "promote"

    def table(self) -> list[dict[str, object]]:
        """Rows for a Prefect table artifact / CLI table."""
        return [
            {
                "metric": m,
                "champion": _r(self.champion.get(m)),
                "challenger": _r(self.challenger.get(m)),
                "delta": _r(self.deltas.get(m)),
                "ci_low": _r(self.intervals.get(m, (math.nan, math.nan))[0]),
                "ci_high": _r(self.intervals.get(m, (math.nan, math.nan))[1]),
            }
            for m in self.metrics
        ]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _r(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), np.nan)
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


def bootstrap_weights(policy: PromotionPolicy, n: int) -> np.ndarray:
    """Row weights of ``policy.bootstrap_samples`` resamples of n rows (B x n), seeded."""
    rng = np.random.default_rng(policy.seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=policy.bootstrap_samples)


def delta_intervals(deltas: dict[str, np.ndarray], policy: PromotionPolicy) -> dict[str, tuple[float, float]]:
    """Central ``policy.confidence`` interval of each metric's bootstrap deltas (NaN replicates dropped)."""
    alpha = (1 - policy.confidence) / 2
    out = {}
    for m, d in deltas.items():
        d = d[~np.isnan(d)]
        out[m] = (
            (float(np.quantile(d, alpha)), float(np.quantile(d, 1 - alpha)))
            if len(d)
            else (math.nan, math.nan)
        )
    return out


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
    raw_champ = {k: float(v[0]) for k, v in metrics_from_predictions(y, champion_pred).items()}
    chall = {k: float(v[0]) for k, v in metrics_from_predictions(y, challenger_pred).items()}
    # a champion that flags nothing has no precision to defend: its undefined metrics count as 0
    champ = {m: 0.0 if math.isnan(v) else v for m, v in raw_champ.items()}
    deltas = {m: chall[m] - champ[m] for m in METRICS}
    weights = bootstrap_weights(policy, n)
    bc = metrics_from_predictions(y, champion_pred, weights)
    bn = metrics_from_predictions(y, challenger_pred, weights)
    intervals = delta_intervals({m: bn[m] - np.nan_to_num(bc[m], nan=0.0) for m in METRICS}, policy)
    base = {
        "holdout_n": n,
        "holdout_positives": positives,
        "champion": champ,
        "challenger": chall,
        "deltas": deltas,
        "intervals": intervals,
    }
    nan = [m for m in METRICS if math.isnan(chall[m])]
    if nan:
        return Decision(
            "reject", f"challenger has undefined metric(s) {', '.join(nan)}: not promoted", **base
        )
    worse = [m for m in METRICS if chall[m] < champ[m] + policy.margin]
    if worse:
        detail = ", ".join(
            f"{m} {chall[m]:.4f} < {champ[m]:.4f}{f' + {policy.margin}' if policy.margin else ''}"
            for m in worse
        )
        return Decision("reject", f"challenger not better on {detail}", **base)
    if not any(chall[m] > champ[m] for m in METRICS):
        return Decision("reject", "challenger ties the champion on precision, recall and F1", **base)
    return Decision(
        "promote",
        "challenger >= champion on precision, recall and F1 and better on "
        + ", ".join(m for m in METRICS if chall[m] > champ[m])
        + _undefined_note(raw_champ),
        **base,
    )


def _undefined_note(raw_champion: dict[str, float]) -> str:
    undefined = [m for m in METRICS if math.isnan(raw_champion[m])]
    return f" (champion's undefined {', '.join(undefined)} counted as 0)" if undefined else ""
