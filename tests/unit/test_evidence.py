"""Promotion evidence from live shadow traffic (pure logic on small frames): the live decision uses the
holdout's rule and thresholds; an evidence mode without a shadow or with too few labelled shadow rows
rejects with that reason; ``shadow`` and ``both`` hold a holdout promotion back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rtml.infra.config.settings import ConfigError, load_settings
from rtml.models.evaluation.decision import Decision, PromotionPolicy
from rtml.models.evaluation.evidence import hold_back, judge_shadow, live_decision
from rtml.models.training.retrain import policy_of

POLICY = PromotionPolicy(min_holdout=200, min_positives=20)


def live_rows(n: int, positives: int, champion: tuple[int, int], shadow: tuple[int, int], seed: int = 0):
    """Labelled live events both models scored, as the shadow table joined with labels holds them:
    ``champion``/``shadow`` = (true positives, false positives) of each model's decisions."""
    y = np.r_[np.ones(positives), np.zeros(n - positives)].astype(int)

    def flags(tp: int, fp: int) -> np.ndarray:
        return np.r_[np.ones(tp), np.zeros(positives - tp), np.ones(fp), np.zeros(n - positives - fp)]

    frame = pd.DataFrame(
        {
            "is_fraud": y,
            "champion_decision": flags(*champion).astype(int),
            "decision": flags(*shadow).astype(int),
        }
    )
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _live(frame: pd.DataFrame, policy: PromotionPolicy = POLICY) -> Decision:
    return live_decision(
        policy, False, frame["is_fraud"].to_numpy(), frame["champion_decision"], frame["decision"]
    )


def test_a_clearly_better_shadow_is_promoted_on_live_evidence_with_both_metrics_recorded() -> None:
    rows = live_rows(1_000, 60, champion=(40, 60), shadow=(56, 10))  # P .40->.85, R .67->.93
    live = _live(rows)
    assert live.outcome == "promote" and live.holdout_n == 1_000 and live.holdout_positives == 60
    assert live.champion["precision"] == pytest.approx(0.4)
    assert live.challenger["recall"] == pytest.approx(56 / 60)
    assert all(live.probabilities[m] >= POLICY.confidence for m in ("precision", "recall", "f1"))
    ev = judge_shadow("shadow", "1", "3", live)
    assert ev.promote and ev.version == "3" and ev.champion_version == "1"
    assert "1000 labelled live events (60 positives)" in ev.reason
    d = ev.to_dict()
    assert d["mode"] == "shadow" and d["live"]["n"] == 1_000 and d["live"]["positives"] == 60
    assert {r["metric"] for r in d["live"]["table"]} == {"precision", "recall", "f1"}


def test_within_noise_ties_and_a_worse_metric_are_rejected_like_on_the_holdout() -> None:
    noisy = _live(live_rows(1_000, 60, champion=(40, 20), shadow=(41, 19)))  # better, by one event each
    assert noisy.outcome == "reject" and noisy.reason.startswith("within noise")
    tie = _live(live_rows(1_000, 60, champion=(40, 20), shadow=(40, 20)))
    assert tie.outcome == "reject" and "ties" in tie.reason
    worse = _live(live_rows(1_000, 60, champion=(50, 40), shadow=(45, 5)))  # F1 up, recall down
    assert worse.outcome == "reject" and "not better on recall" in worse.reason
    for live in (noisy, tie, worse):
        ev = judge_shadow("shadow", "1", "2", live)
        assert not ev.promote and ev.reason.startswith("promotion.evidence=shadow: shadow v2 not promoted")


def test_too_few_labelled_shadow_rows_or_positives_reject_with_that_reason() -> None:
    few = _live(live_rows(150, 30, champion=(10, 10), shadow=(29, 0)))
    assert few.outcome == "no_decision" and "150 labelled events" in few.reason
    assert "promotion.min_holdout=200" in few.reason
    rare = _live(live_rows(1_000, 12, champion=(2, 50), shadow=(12, 0)))  # overwhelming, but 12 positives
    assert rare.outcome == "no_decision" and "promotion.min_positives=20" in rare.reason
    none = _live(live_rows(0, 0, champion=(0, 0), shadow=(0, 0)))
    assert none.outcome == "no_decision" and none.holdout_n == 0
    for live in (few, rare, none):
        ev = judge_shadow("shadow", "1", "2", live)
        assert ev.outcome == "reject" and live.reason in ev.reason  # never a silent pass


def test_no_shadow_or_a_shadow_that_is_the_champion_rejects() -> None:
    good = _live(live_rows(1_000, 60, champion=(40, 60), shadow=(56, 10)))
    ev = judge_shadow("shadow", "1", None, None)
    assert ev.outcome == "reject" and "no @shadow version" in ev.reason and ev.to_dict()["version"] is None
    ev = judge_shadow("both", "4", "4", good)
    assert ev.outcome == "reject" and "is the champion" in ev.reason
    with pytest.raises(ValueError, match="holdout"):
        judge_shadow("holdout", "1", "2", good)


def test_both_needs_the_shadows_own_holdout_decision_against_this_champion_too() -> None:
    good = _live(live_rows(1_000, 60, champion=(40, 60), shadow=(56, 10)))
    ok = judge_shadow("both", "1", "2", good, holdout_verdict="promote", holdout_against="1")
    assert ok.promote and ok.reason.endswith("and on its own holdout")
    assert ok.to_dict()["holdout"] == {"outcome": "promote", "against": "1"}
    rejected = judge_shadow("both", "1", "2", good, holdout_verdict="reject", holdout_against="1")
    assert not rejected.promote and "holdout decision is reject" in rejected.reason
    missing = judge_shadow("both", "1", "2", good)
    assert not missing.promote and "holdout decision is missing" in missing.reason
    stale = judge_shadow("both", "5", "6", good, holdout_verdict="promote", holdout_against="3")
    assert not stale.promote and "was against v3, not the champion v5" in stale.reason
    bad_live = _live(live_rows(1_000, 60, champion=(40, 20), shadow=(40, 20)))
    both_bad = judge_shadow("both", "1", "2", bad_live, holdout_verdict="promote", holdout_against="1")
    assert not both_bad.promote and "ties" in both_bad.reason


def test_shadow_and_both_hold_a_holdout_promotion_back_keeping_its_reason() -> None:
    promote = Decision("promote", "challenger better on precision, recall and F1", 900, 30)
    reject = Decision("reject", "within noise", 900, 30)
    assert hold_back("holdout", promote) is promote
    for mode in ("shadow", "both"):
        held = hold_back(mode, promote)
        assert held.outcome == "reject" and not held.promote
        assert held.reason.startswith(f"promotion.evidence={mode}: held back")
        assert "challenger better on precision, recall and F1" in held.reason
        assert held.holdout_n == 900 and promote.outcome == "promote"  # a copy
        assert hold_back(mode, reject) is reject


def test_regression_shadows_are_judged_on_rmse_mae_and_r2() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(0, 1, 600)
    champion = y + rng.normal(0, 1.0, 600)
    shadow = y + rng.normal(0, 0.3, 600)
    live = live_decision(POLICY, True, y, champion, shadow)
    assert live.outcome == "promote" and set(live.metrics) == {"rmse", "mae", "r2"}
    assert live.holdout_positives == 0  # no positives bar for regression
    assert live_decision(POLICY, True, y, shadow, champion).outcome == "reject"


def test_evidence_settings_default_to_todays_behaviour_and_are_validated(tmp_path: Path) -> None:
    s = load_settings(use_default_file=False)
    assert s.promotion.evidence == "holdout" and s.promotion.shadow is False
    s = load_settings(use_default_file=False, overrides={"promotion": {"evidence": "both", "shadow": True}})
    assert s.promotion.evidence == "both" and s.promotion.shadow is True
    assert policy_of(s).min_positives == s.promotion.min_positives  # the live check's thresholds
    cfg = tmp_path / "rtml.yaml"
    cfg.write_text("promotion: {evidence: live}\n")
    with pytest.raises(ConfigError, match="promotion.evidence"):
        load_settings(cfg)
    cfg.write_text("promotion: {shadow: maybe}\n")
    with pytest.raises(ConfigError, match="promotion.shadow"):
        load_settings(cfg)


def test_only_a_shadow_that_can_still_win_waits_for_live_evidence() -> None:
    """promotion.shadow keeps an undecided @shadow for a later round only when more labels can
    promote it: under ``both`` its own holdout decision must promote against this champion."""
    from rtml.flows.evidence import _waiting

    s = load_settings(use_default_file=False)
    few = _live(live_rows(50, 5, (5, 0), (5, 0)))
    assert few.outcome == "no_decision"
    decided = judge_shadow("shadow", "1", "2", _live(live_rows(600, 40, (20, 30), (20, 30))))
    assert decided.live.outcome != "no_decision" and _waiting(s, decided, "1") is None
    for verdict, against in (("reject", "1"), (None, None), ("promote", "0")):  # cannot win under both
        both = judge_shadow("both", "1", "2", few, holdout_verdict=verdict, holdout_against=against)
        assert _waiting(s, both, "1") is None
    assert _waiting(s, judge_shadow("shadow", "1", None, None), "1") is None  # no shadow
