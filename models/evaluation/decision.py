"""The champion/challenger verdict from paired bootstrap evidence (pure logic; thresholds are data).

Both models are judged on the same holdout rows, and every bootstrap replicate resamples those rows
once for both (a *paired* bootstrap), so the replicate deltas carry the noise of the holdout and not
of two unrelated samples. The challenger is promoted iff, on **every** metric of its task, it beats the
champion by more than ``margin`` in at least ``confidence`` of the replicates:

- an undefined metric is never a free win. A challenger metric undefined on the holdout rejects. A
  champion metric undefined there (precision of a champion that flagged nothing) is replaced by the
  task's *floor* for it when there is one (precision: ``precision_floor``, at least the positive rate
  that flagging at random achieves), so the challenger must show skill, not merely exist; without a
  floor it rejects. In a replicate, an undefined metric of either model is not a win;
- a metric at its ceiling (precision, recall or F1 of 1.0) cannot be beaten, so matching a perfect
  champion there counts as a win;
- a point estimate that is not better rejects as "not better"; one that is better, but not in enough
  replicates, rejects as "within noise"; identical metrics reject as a tie.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> boot = {"m": rng.normal(0.5, 0.01, 200)}
>>> d = verdict(PromotionPolicy(), ("m",), {"m": False}, {"m": 0.4}, {"m": 0.5}, {"m": np.full(200, 0.4)},
...             boot, {"holdout_n": 1000, "holdout_positives": 0})
>>> d.outcome, d.probabilities["m"]
('promote', 1.0)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class PromotionPolicy:
    """``confidence``: minimum share of bootstrap replicates in which the challenger beats the champion
    by more than ``margin``, on every metric; also the quantiles of the reported delta intervals."""

    margin: float = 0.0
    precision_floor: float = 0.5
    min_holdout: int = 500
    min_positives: int = 20
    bootstrap_samples: int = 200
    confidence: float = 0.95
    seed: int = 0


@dataclass
class Decision:
    """One champion/challenger comparison on one holdout: both models' metrics, the deltas
    (challenger - champion), the share of replicates in which the challenger is better (``probabilities``)
    and the ``(1 - confidence, confidence)`` quantiles of the replicate deltas (``intervals``)."""

    outcome: Literal["promote", "reject", "no_decision"]
    reason: str
    holdout_n: int
    holdout_positives: int
    champion: dict[str, float] = field(default_factory=dict)
    challenger: dict[str, float] = field(default_factory=dict)
    deltas: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    metrics: tuple[str, ...] = ("precision", "recall", "f1")
    probabilities: dict[str, float] = field(default_factory=dict)
    confidence: float = math.nan

    @property
    def promote(self) -> bool:
        return self.outcome == "promote"

    def table(self) -> list[dict[str, object]]:
        """Rows for a Prefect table artifact / CLI table / the ``rtml.decision_table`` tag."""
        return [
            {
                "metric": m,
                "champion": _r(self.champion.get(m)),
                "challenger": _r(self.challenger.get(m)),
                "delta": _r(self.deltas.get(m)),
                "p_better": _r(self.probabilities.get(m)),
                "ci_low": _r(self.intervals.get(m, (math.nan, math.nan))[0]),
                "ci_high": _r(self.intervals.get(m, (math.nan, math.nan))[1]),
            }
            for m in self.metrics
        ]

    def markdown(self, champion_version: str, challenger_version: str, where: str = "holdout") -> str:
        """The decision as a Markdown table: MLflow shows it as the version's description (``where``:
        what both were judged on, e.g. "live labelled events").

        >>> d = Decision("reject", "within noise", 900, 30, {"f1": 0.5}, {"f1": 0.55}, {"f1": 0.05},
        ...              {"f1": (-0.01, 0.1)}, ("f1",), {"f1": 0.9}, 0.95)
        >>> print(d.markdown("1", "2"))
        **reject** v2 against champion v1 on the same holdout (900 rows, 30 positives): within noise
        <BLANKLINE>
        | metric | champion v1 | challenger v2 | delta | P(better), needs 0.95 | delta interval |
        |---|---|---|---|---|---|
        | f1 | 0.500 | 0.550 | +0.050 | 0.90 | [-0.010, +0.100] |
        """

        def f(x: object, fmt: str = ".3f") -> str:
            return "n/a" if x is None else format(x, fmt)

        head = (
            f"**{self.outcome}** v{challenger_version} against champion v{champion_version} on the same "
            f"{where} ({self.holdout_n} rows, {self.holdout_positives} positives): {self.reason}"
        )
        lines = [
            head,
            "",
            f"| metric | champion v{champion_version} | challenger v{challenger_version} | delta "
            f"| P(better), needs {self.confidence:.2f} | delta interval |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.table():
            lines.append(
                f"| {r['metric']} | {f(r['champion'])} | {f(r['challenger'])} | {f(r['delta'], '+.3f')} "
                f"| {f(r['p_better'], '.2f')} | [{f(r['ci_low'], '+.3f')}, {f(r['ci_high'], '+.3f')}] |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        """JSON-able (undefined metrics as None, not NaN)."""
        return _clean(asdict(self))


def _r(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def _clean(x: object) -> object:
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def bootstrap_weights(policy: PromotionPolicy, n: int) -> np.ndarray:
    """Row weights of ``policy.bootstrap_samples`` resamples of n rows (B x n), seeded."""
    rng = np.random.default_rng(policy.seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=policy.bootstrap_samples)


def _gain(champion: np.ndarray | float, challenger: np.ndarray | float, lower_is_better: bool):  # noqa: ANN202
    """How much better the challenger is (positive = better), in the metric's own units."""
    return np.subtract(champion, challenger) if lower_is_better else np.subtract(challenger, champion)


def verdict(
    policy: PromotionPolicy,
    metrics: tuple[str, ...],
    lower_is_better: dict[str, bool],
    champion: dict[str, float],
    challenger: dict[str, float],
    boot_champion: dict[str, np.ndarray],
    boot_challenger: dict[str, np.ndarray],
    base: dict[str, int],
    bars: dict[str, tuple[float, np.ndarray]] | None = None,
    ceilings: dict[str, float] | None = None,
) -> Decision:
    """The decision from point metrics and paired bootstrap replicates (arrays of length B) of both;
    ``bars``: per metric, the no-skill value (point, replicates) that stands in for an undefined
    champion metric; ``ceilings``: the best possible value of a metric (1.0 for precision), at which a
    tie counts as a win -- nothing can beat a perfect champion, and matching it is not worse."""
    bars, ceilings = bars or {}, ceilings or {}
    deltas = {m: challenger[m] - champion[m] for m in metrics}
    probabilities, intervals = {}, {}
    lo, hi = 1 - policy.confidence, policy.confidence
    for m in metrics:
        bar = bars[m][1] if m in bars else np.full_like(boot_champion[m], np.nan)
        judged = np.where(np.isnan(boot_champion[m]), bar, boot_champion[m])
        gain = _gain(judged, boot_challenger[m], lower_is_better[m])
        wins = np.nan_to_num(gain, nan=-np.inf) > policy.margin
        if m in ceilings:
            wins |= (judged == ceilings[m]) & (boot_challenger[m] == ceilings[m])
        probabilities[m] = float(np.mean(wins))
        d = (boot_challenger[m] - judged)[~np.isnan(gain)]  # the values judged: the floor where undefined
        intervals[m] = (float(np.quantile(d, lo)), float(np.quantile(d, hi))) if len(d) else (math.nan,) * 2
    decision = {
        **base,
        "champion": champion,
        "challenger": challenger,
        "deltas": deltas,
        "intervals": intervals,
        "metrics": metrics,
        "probabilities": probabilities,
        "confidence": policy.confidence,
    }
    outcome, reason = _rule(
        policy, metrics, lower_is_better, champion, challenger, probabilities, bars, ceilings
    )
    return Decision(outcome, reason, **decision)  # type: ignore[arg-type]


def _rule(
    policy: PromotionPolicy,
    metrics: tuple[str, ...],
    lower_is_better: dict[str, bool],
    champion: dict[str, float],
    challenger: dict[str, float],
    probabilities: dict[str, float],
    bars: dict[str, tuple[float, np.ndarray]],
    ceilings: dict[str, float],
) -> tuple[Literal["promote", "reject"], str]:
    undefined = [m for m in metrics if math.isnan(challenger[m])]
    if undefined:
        return "reject", f"challenger has undefined metric(s) {', '.join(undefined)}: not promoted"
    undefined = [m for m in metrics if math.isnan(champion[m])]
    if any(m not in bars for m in undefined):
        return "reject", (
            f"champion's {', '.join(undefined)} undefined on this holdout: an undefined metric is no "
            "evidence the challenger is better, not promoted (compare them, `rtml promote` by hand)"
        )
    champion = {m: bars[m][0] if m in undefined else champion[m] for m in metrics}
    note = "".join(
        f" (champion's {m} undefined: judged against the floor {bars[m][0]:.4f})" for m in undefined
    )
    outcome, reason = _compare(
        policy, metrics, lower_is_better, champion, challenger, probabilities, ceilings
    )
    return outcome, reason + note


def _compare(
    policy: PromotionPolicy,
    metrics: tuple[str, ...],
    lower_is_better: dict[str, bool],
    champion: dict[str, float],
    challenger: dict[str, float],
    probabilities: dict[str, float],
    ceilings: dict[str, float],
) -> tuple[Literal["promote", "reject"], str]:
    gains = {m: float(_gain(champion[m], challenger[m], lower_is_better[m])) for m in metrics}
    perfect = {m for m in metrics if m in ceilings and champion[m] == challenger[m] == ceilings[m]}
    if all(g == 0 for g in gains.values()):
        return "reject", f"challenger ties the champion on {_names(metrics)}"
    worse = [m for m in metrics if gains[m] < policy.margin and m not in perfect]
    if worse:
        sign = {m: "-" if lower_is_better[m] else "+" for m in metrics}
        return "reject", "challenger not better on " + ", ".join(
            f"{m} {challenger[m]:.4f} vs {champion[m]:.4f}"
            + (f" {sign[m]} {policy.margin}" if policy.margin else "")
            for m in worse
        )
    noisy = [m for m in metrics if probabilities[m] < policy.confidence]
    if noisy:
        return "reject", (
            f"within noise: {policy.confidence:.0%} of {policy.bootstrap_samples} paired bootstrap "
            "resamples must favour the challenger on each metric; "
            + ", ".join(
                f"{m} ties ({challenger[m]:.4f})" if gains[m] == 0 else f"{m} only {probabilities[m]:.0%}"
                for m in noisy
            )
        )
    return "promote", (
        f"challenger better on {_names(metrics)} with probability "
        + ", ".join(f"{probabilities[m]:.2f}" for m in metrics)
        + f" (>= {policy.confidence})"
    )


def _names(metrics: tuple[str, ...]) -> str:
    pretty = {"precision": "precision", "recall": "recall", "f1": "F1", "rmse": "RMSE", "mae": "MAE"}
    names = [pretty.get(m, m.upper() if m != "r2" else "R^2") for m in metrics]
    return ", ".join(names[:-1]) + " and " + names[-1]
