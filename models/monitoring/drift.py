"""Drift statistics against a model version's reference profile (pure, vectorised).

Numeric features: PSI over the reference's decile bins and a two-sample Kolmogorov-Smirnov test
against the reference sample. Categorical features: PSI and a chi-square goodness-of-fit test
against the reference frequencies. Scores: PSI of the score distribution. Performance: live
precision / recall / F1 of the served decisions against the version's holdout figures, and River's
ADWIN on the error stream. Each check returns a :class:`Finding` when a threshold is crossed.

>>> rng = np.random.default_rng(0)
>>> ref = {"sample": np.sort(rng.normal(0, 1, 1000)).tolist()}
>>> same = numeric_stats(ref, rng.normal(0, 1, 5000))
>>> moved = numeric_stats(ref, rng.normal(1, 1, 5000))
>>> same["psi"] < 0.05 < 0.25 < moved["psi"], same["ks"] < 0.05 < 0.3 < moved["ks"]
(True, True)
>>> round(psi(np.array([0.5, 0.5]), np.array([0.9, 0.1])), 3)
0.879
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

EPS = 1e-4
KINDS = ("feature", "prediction", "performance", "concept")


@dataclass
class Finding:
    """One threshold crossed: what drifted, by how much, and how bad it is."""

    kind: str  # feature | prediction | performance | concept
    feature: str  # feature name, "score", "model" (live metrics) or "error_rate" (ADWIN)
    statistic: str  # psi | ks | chi2 | relative_drop | adwin
    value: float
    threshold: float
    severity: str  # info | warning | critical
    window: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Deduplication key within a model version: one alert per (feature, kind) per cooldown."""
        return f"{self.kind}.{self.feature}"

    @property
    def event(self) -> str:
        return f"rtml.drift.{self.kind}"

    def payload(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "severity"}


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two distributions over the same bins (fractions)."""
    e = np.clip(np.asarray(expected, dtype=float), EPS, None)
    a = np.clip(np.asarray(actual, dtype=float), EPS, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_stats(
    reference: dict[str, Any], values: np.ndarray, edges: list[float] | None = None
) -> dict[str, Any]:
    """PSI and KS against the reference sample, for finite values.

    PSI bins are the reference deciles, or fixed ``edges`` (scores of probability models: their
    deciles crowd near 0, where a harmless shift of 1e-6 would cross bins)."""
    from scipy.stats import ks_2samp

    ref = np.asarray(reference["sample"], dtype=float)
    cur = np.asarray(values, dtype=float)
    cur = cur[np.isfinite(cur)]
    if not len(ref) or not len(cur):
        return {"n": int(len(cur)), "psi": float("nan"), "ks": float("nan"), "p_value": float("nan")}
    edges = np.asarray(edges) if edges else np.unique(np.quantile(ref, np.linspace(0.1, 0.9, 9)))
    expected = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
    actual = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1)
    ks = ks_2samp(ref, cur)
    return {
        "n": int(len(cur)),
        "psi": psi(expected / len(ref), actual / len(cur)),
        "ks": float(ks.statistic),
        "p_value": float(ks.pvalue),
        "reference_mean": float(ref.mean()),
        "current_mean": float(cur.mean()),
    }


def categorical_stats(reference: dict[str, float], values: pd.Series) -> dict[str, Any]:
    """PSI and chi-square goodness of fit of category frequencies (unseen ones pooled as 'other')."""
    from scipy.stats import chisquare

    counts = values.astype(str).value_counts()
    cats = list(reference)
    observed = np.array([counts.get(c, 0) for c in cats] + [counts.drop(cats, errors="ignore").sum()])
    expected_frac = np.clip(np.array([reference[c] for c in cats] + [0.0]), EPS, None)
    expected_frac /= expected_frac.sum()
    n = int(observed.sum())
    if n == 0:
        return {"n": 0, "psi": float("nan"), "chi2": float("nan"), "p_value": float("nan")}
    chi = chisquare(observed, expected_frac * n)
    current = {c: float(k / n) for c, k in zip([*cats, "(other)"], observed, strict=True) if k}
    return {
        "n": n,
        "psi": psi(expected_frac, observed / n),
        "chi2": float(chi.statistic),
        "p_value": float(chi.pvalue),
        "current": current,
    }


def adwin_change(errors: np.ndarray, delta: float) -> dict[str, Any] | None:
    """River's ADWIN over the 0/1 error stream (oldest first): the last change where errors rose.

    At a detection ADWIN drops the older part of its window; what it keeps is the new regime, so
    the stream splits into ``before`` and ``recent`` at ``cut``. Improvements are not reported.
    """
    from river.drift import ADWIN

    errors = np.asarray(errors, dtype=float)
    detector = ADWIN(delta=delta)
    cut = None
    for i, e in enumerate(errors):
        detector.update(e)
        if detector.drift_detected:
            start = i - int(detector.width) + 1
            if start > 0 and errors[start:].mean() > errors[:start].mean():
                cut = start
    if cut is None:
        return None
    return {
        "cut": int(cut),
        "n": int(len(errors)),
        "error_rate_before": float(errors[:cut].mean()),
        "error_rate_recent": float(errors[cut:].mean()),
    }


def _severity_of_psi(value: float, cfg: Any) -> str | None:
    if value >= cfg.psi_critical:
        return "critical"
    return "warning" if value >= cfg.psi_warning else None


def input_findings(
    reference: dict[str, Any], scores: pd.DataFrame, features: list[str], cfg: Any, window: str
) -> tuple[list[Finding], dict[str, Any]]:
    """Feature and score-distribution drift of a window of scored events; (findings, all statistics)."""
    findings: list[Finding] = []
    stats: dict[str, Any] = {}
    for name in features:
        if name in reference.get("numeric", {}) and "sample" in reference["numeric"][name]:
            st = numeric_stats(reference["numeric"][name], pd.to_numeric(scores[name], errors="coerce"))
            ks_hit = st["ks"] >= cfg.ks_statistic and st["p_value"] < cfg.p_value
            statistic, value, threshold = "psi", st["psi"], cfg.psi_warning
            severity = _severity_of_psi(st["psi"], cfg)
            if severity is None and ks_hit:
                statistic, value, threshold, severity = "ks", st["ks"], cfg.ks_statistic, "warning"
        elif name in reference.get("categorical", {}):
            st = categorical_stats(reference["categorical"][name], scores[name])
            statistic, value, threshold = "psi", st["psi"], cfg.psi_warning
            severity = _severity_of_psi(st["psi"], cfg)
            if severity is None and st["p_value"] < cfg.p_value and st["psi"] >= cfg.psi_warning / 2:
                statistic, value, threshold, severity = "chi2", st["chi2"], cfg.p_value, "warning"
        else:
            continue
        stats[name] = st
        if severity is not None:
            findings.append(Finding("feature", name, statistic, value, threshold, severity, window, st))
    if "score" in reference and "sample" in reference["score"]:
        values = scores["score"].to_numpy(dtype=float)
        in_unit = bool(np.nanmin(values) >= 0 and np.nanmax(values) <= 1) if len(values) else True
        st = numeric_stats(reference["score"], values, cfg.score_bands if in_unit else None)
        stats["score"] = st
        if st["psi"] >= cfg.score_psi:
            severity = "critical" if st["psi"] >= 2 * cfg.score_psi else "warning"
            findings.append(
                Finding("prediction", "score", "psi", st["psi"], cfg.score_psi, severity, window, st)
            )
    return findings, stats


def performance_findings(
    labelled: pd.DataFrame, label: str, holdout: dict[str, float], cfg: Any, window: str
) -> tuple[list[Finding], dict[str, Any]]:
    """Live precision / recall / F1 of served decisions vs holdout figures, and ADWIN on the errors.

    ``labelled`` holds the served ``decision`` and the ``label``, oldest first.
    """
    from rtml.models.evaluation.metrics import classification_metrics

    if len(labelled) < cfg.min_labelled:
        return [], {"n": int(len(labelled)), "verdict": f"fewer than {cfg.min_labelled} labelled events"}
    y, d = labelled[label].to_numpy().astype(int), labelled["decision"].to_numpy().astype(int)
    live = classification_metrics(y, d)
    stats: dict[str, Any] = {"live": live, "holdout": holdout}
    findings: list[Finding] = []
    drops = {}
    for metric in ("precision", "recall", "f1"):
        ref, now = holdout.get(metric), live[metric]
        if ref is None or not ref > 0:
            continue
        now = 0.0 if now != now else now  # undefined live metric (nothing flagged) counts as 0
        drops[metric] = (ref - now) / ref
    stats["relative_drop"] = drops
    worst = max(drops.items(), key=lambda kv: kv[1], default=None)
    if worst is not None and live["positives"] > 0 and worst[1] >= cfg.performance_drop:
        findings.append(
            Finding(
                "performance",
                "model",
                "relative_drop",
                float(worst[1]),
                cfg.performance_drop,
                "critical",
                window,
                {"metric": worst[0], **stats},
            )
        )
    change = adwin_change((y != d).astype(float), cfg.adwin_delta)
    stats["adwin"] = change
    if change is not None:
        rate = change["error_rate_recent"]
        findings.append(
            Finding("concept", "error_rate", "adwin", rate, cfg.adwin_delta, "warning", window, change)
        )
    return findings, stats
