"""Promotion evidence (``promotion.evidence``): the holdout, live shadow traffic, or both (pure logic).

- ``holdout`` (default): a retrain's challenger is promoted on its paired-bootstrap decision on the
  round's holdout (:mod:`rtml.models.evaluation.promotion`).
- ``shadow``: no challenger is promoted on the holdout alone (:func:`hold_back`); the version holding
  ``@shadow`` is promoted when, on the live events both it and the champion scored that have a label,
  it beats the champion under the same rule: precision, recall and F1 each better in at least
  ``promotion.confidence`` of the paired bootstrap resamples of those events, with at least
  ``promotion.min_holdout`` of them and ``promotion.min_positives`` positives (:func:`live_decision`).
- ``both``: the ``@shadow``'s own holdout decision (made against the current champion) *and* the live
  one.

No shadow, a shadow that is the champion, or too few labelled shadow rows rejects, with that reason.

>>> import numpy as np
>>> y = np.array([1] * 40 + [0] * 560)
>>> champ = np.r_[np.ones(25), np.zeros(15), np.zeros(530), np.ones(30)]
>>> shadow = np.r_[np.ones(38), np.zeros(2), np.zeros(555), np.ones(5)]
>>> live = live_decision(PromotionPolicy(min_holdout=100, min_positives=10), False, y, champ, shadow)
>>> e = judge_shadow("shadow", "1", "2", live)
>>> e.outcome, e.version
('promote', '2')
>>> e = judge_shadow("both", "1", "2", live, holdout_verdict="reject", holdout_against="1")
>>> e.outcome, "its holdout decision is reject" in e.reason
('reject', True)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from rtml.models.evaluation.decision import Decision, PromotionPolicy

MODES = ("holdout", "shadow", "both")


def live_decision(
    policy: PromotionPolicy, regression: bool, y: np.ndarray, champion: np.ndarray, shadow: np.ndarray
) -> Decision:
    """The shadow against the champion on the same labelled live events: their decisions
    (classification, anomaly) or predictions (regression), judged like a holdout."""
    from rtml.models.evaluation.promotion import decide
    from rtml.models.evaluation.promotion_regression import decide_regression

    y = np.asarray(y)
    n = int(len(y))
    positives = 0 if regression else int(np.asarray(y).astype(int).sum())
    if n < policy.min_holdout:
        return Decision(
            "no_decision",
            f"{n} labelled events scored by both the shadow and the champion, fewer than "
            f"promotion.min_holdout={policy.min_holdout}",
            n,
            positives,
        )
    if not regression and positives < policy.min_positives:
        return Decision(
            "no_decision",
            f"{positives} positives among the {n} labelled events scored by both, fewer than "
            f"promotion.min_positives={policy.min_positives}",
            n,
            positives,
        )
    if regression:
        return decide_regression(policy, y, champion, shadow)
    return decide(policy, y, champion, shadow)


@dataclass
class Evidence:
    """The live (and, for ``both``, holdout) evidence on the ``@shadow`` version at one retrain."""

    mode: str
    outcome: Literal["promote", "reject"]
    reason: str
    version: str | None = None  # the @shadow judged
    champion_version: str | None = None
    live: Decision | None = None
    holdout_verdict: str | None = None  # both: the shadow's own holdout decision ...
    holdout_against: str | None = None  # ... and the champion it was made against
    shadowed_at_ms: int | None = None  # when the judged version was made @shadow (its audit record)

    @property
    def promote(self) -> bool:
        return self.outcome == "promote"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: what was used (mode, version, live counts, both models' live metrics)."""
        out: dict[str, Any] = {
            "mode": self.mode,
            "outcome": self.outcome,
            "reason": self.reason,
            "version": self.version,
            "champion_version": self.champion_version,
        }
        if self.live is not None:
            out["live"] = {
                "outcome": self.live.outcome,
                "reason": self.live.reason,
                "n": self.live.holdout_n,
                "positives": self.live.holdout_positives,
                "table": self.live.table() if self.live.champion else [],
            }
        if self.mode == "both":
            out["holdout"] = {"outcome": self.holdout_verdict, "against": self.holdout_against}
        return out


def judge_shadow(
    mode: str,
    champion_version: str,
    shadow_version: str | None,
    live: Decision | None,
    holdout_verdict: str | None = None,
    holdout_against: str | None = None,
) -> Evidence:
    """Whether ``@shadow`` is promoted under ``mode`` (``shadow`` or ``both``), and why."""
    if mode not in ("shadow", "both"):
        raise ValueError(f"promotion.evidence={mode}: no live evidence is judged")
    head = f"promotion.evidence={mode}: "
    ev = Evidence(
        mode, "reject", "", shadow_version, champion_version, live, holdout_verdict, holdout_against
    )
    if shadow_version is None:
        ev.reason = (
            head + "no @shadow version to judge on live traffic (promotion.shadow: true or `rtml shadow`)"
        )
        return ev
    if shadow_version == champion_version:
        ev.reason = head + f"@shadow v{shadow_version} is the champion: nothing to judge"
        return ev
    if live is None or not live.promote:
        why = "no live evidence" if live is None else live.reason
        ev.reason = head + f"shadow v{shadow_version} not promoted on live traffic: {why}"
        return ev
    if mode == "both" and holdout_verdict != "promote":
        ev.reason = head + (
            f"shadow v{shadow_version} not promoted: its holdout decision is "
            f"{holdout_verdict or 'missing'} (live: {live.reason})"
        )
        return ev
    if mode == "both" and holdout_against != champion_version:
        ev.reason = head + (
            f"shadow v{shadow_version} not promoted: its holdout decision was against "
            f"v{holdout_against}, not the champion v{champion_version} (live: {live.reason})"
        )
        return ev
    ev.outcome = "promote"
    ev.reason = head + (
        f"shadow v{shadow_version} beats champion v{champion_version} on {live.holdout_n} labelled live "
        f"events ({live.holdout_positives} positives): {live.reason}"
        + ("; and on its own holdout" if mode == "both" else "")
    )
    return ev


def hold_back(mode: str, decision: Decision) -> Decision:
    """A challenger's holdout decision under ``mode``: with ``shadow`` or ``both`` a *promote* is held
    back (rejected, the holdout verdict kept in the reason): only live evidence promotes.

    >>> d = Decision("promote", "challenger better", 900, 30)
    >>> hold_back("holdout", d) is d, hold_back("shadow", d).outcome
    (True, 'reject')
    """
    if mode == "holdout" or not decision.promote:
        return decision
    return replace(
        decision,
        outcome="reject",
        reason=f"promotion.evidence={mode}: held back until it beats the champion on live traffic as "
        f"@shadow (holdout: {decision.reason})",
    )
