"""Unit tier: drift statistics and the findings they turn into (pure logic, no services)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rtml.infra.config.settings_ops import DriftSettings
from rtml.models.monitoring.drift import (
    adwin_change,
    categorical_stats,
    input_findings,
    performance_findings,
    psi,
)

CFG = DriftSettings()
RNG = np.random.default_rng(7)


def profile() -> dict:
    return {
        "numeric": {"amount": {"sample": np.sort(RNG.lognormal(3, 1, 1000)).tolist()}},
        "categorical": {"channel": {"pos": 0.7, "online": 0.25, "atm": 0.05}},
        "score": {"sample": np.sort(RNG.beta(0.5, 40, 1000)).tolist()},
    }


def window(n: int, amount_x: float = 1.0, online: float = 0.25, score_a: float = 0.5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount": RNG.lognormal(3, 1, n) * amount_x,
            "channel": RNG.choice(["pos", "online", "atm"], n, p=[0.95 - online, online, 0.05]),
            "score": RNG.beta(score_a, 40, n),
        }
    )


def test_psi_is_zero_for_equal_distributions_and_grows_with_the_shift() -> None:
    p = np.array([0.25, 0.25, 0.5])
    assert psi(p, p) == 0.0
    assert psi(p, np.array([0.3, 0.3, 0.4])) < psi(p, np.array([0.5, 0.3, 0.2]))


def test_stationary_window_gives_no_finding() -> None:
    findings, stats = input_findings(profile(), window(3000), ["amount", "channel"], CFG, "15m")
    assert findings == [] and set(stats) == {"amount", "channel", "score"}


def test_shifted_feature_is_found_with_a_severity_by_psi() -> None:
    findings, _ = input_findings(profile(), window(3000, amount_x=3.0), ["amount", "channel"], CFG, "15m")
    [f] = findings
    assert (f.kind, f.feature, f.statistic, f.severity) == ("feature", "amount", "psi", "critical")
    assert f.value >= CFG.psi_critical and f.key == "feature.amount" and f.event == "rtml.drift.feature"


def test_category_mix_change_and_unseen_categories_are_found() -> None:
    found, _ = input_findings(profile(), window(3000, online=0.6), ["channel"], CFG, "15m")
    assert [(f.feature, f.kind) for f in found] == [("channel", "feature")]
    st = categorical_stats({"pos": 0.5, "online": 0.5}, pd.Series(["pos"] * 50 + ["teleport"] * 50))
    assert st["current"] == {"pos": 0.5, "(other)": 0.5} and st["psi"] > 1


def test_score_drift_uses_probability_bands() -> None:
    findings, stats = input_findings(profile(), window(3000, score_a=3.0), [], CFG, "15m")
    assert [f.kind for f in findings] == ["prediction"] and stats["score"]["psi"] >= CFG.score_psi


def test_performance_drop_against_holdout_is_critical_and_small_samples_give_no_verdict() -> None:
    n = 2000
    y = (RNG.random(n) < 0.05).astype(int)
    served_ok = pd.DataFrame({"label": y, "decision": y})
    holdout = {"precision": 0.8, "recall": 0.7, "f1": 0.75}
    assert performance_findings(served_ok, "label", holdout, CFG, "1d")[0] == []
    missed = served_ok.assign(decision=np.where(np.arange(n) < n // 2, y, 0))  # second half: nothing flagged
    findings, stats = performance_findings(missed, "label", holdout, CFG, "1d")
    perf = [f for f in findings if f.kind == "performance"]
    assert len(perf) == 1 and perf[0].severity == "critical" and perf[0].details["metric"] == "recall"
    assert stats["relative_drop"]["recall"] > CFG.performance_drop
    few, stats = performance_findings(missed.head(50), "label", holdout, CFG, "1d")
    assert few == [] and "fewer than" in stats["verdict"]


def test_adwin_reports_rising_errors_only() -> None:
    low, high = (RNG.random(4000) < 0.01), (RNG.random(3000) < 0.08)
    rise = adwin_change(np.r_[low, high].astype(float), 0.002)
    assert rise is not None and rise["error_rate_recent"] > rise["error_rate_before"]
    assert adwin_change(np.r_[high, low].astype(float), 0.002) is None
    assert adwin_change((RNG.random(6000) < 0.02).astype(float), 0.002) is None
