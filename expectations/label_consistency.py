"""Label-consistency expectation: labels must agree with the champion where it is confident.

Poisoned labels that keep the positive rate (a swap of positives and negatives) or that stay inside
its bounds (5% of the negatives flipped) pass every column-level expectation. They do not pass this
one: among the rows the champion scores as confidently negative (at or below its reference quantile
``quality.label_low_quantile``), the share labelled positive, and among its confident positives (at
or above ``quality.label_high_quantile``), the share labelled negative, are compared with the same
shares on the champion's own training data (its reference profile) plus a tolerance, each with a
one-sided binomial test at ``quality.label_alpha``. Random flips hit the confident regions in
proportion to their size; real fraud the champion misses (concept drift) is what the tolerance is for.

Registered with Great Expectations on import (metric ``rtml.label_agreement_counts``, expectation
``expect_labels_to_agree_with_champion``); the gate imports this module before it builds a suite.
The champion's scores are a derived column (:data:`SCORE_COLUMN`) the gate adds with
:func:`champion_scores`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from great_expectations.compatibility import pydantic
from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.core.suite_parameters import SuiteParameterDict
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import BatchExpectation
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider

from rtml.features.featurise import featurise_history
from rtml.infra.config.spec import StreamSpec

SCORE_COLUMN = "_champion_score"
EXPECTATION = "expect_labels_to_agree_with_champion"
METRIC = "rtml.label_agreement_counts"

_Number = float | SuiteParameterDict


def agreement_counts(
    labels: pd.Series, scores: pd.Series, positive: Any, low_cut: float, high_cut: float
) -> dict[str, int]:
    """Rows in the champion's confident regions and how many of them are labelled against it.

    >>> agreement_counts(pd.Series([0, 1, 1, 0]), pd.Series([0.1, 0.1, 0.9, 0.95]), 1, 0.2, 0.9)
    {'rows': 4, 'scored': 4, 'low_rows': 2, 'low_against': 1, 'high_rows': 2, 'high_against': 1}
    """
    s = pd.to_numeric(scores, errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(s) & labels.notna().to_numpy()
    pos = (labels == positive).to_numpy()
    low, high = ok & (s <= low_cut), ok & (s >= high_cut)
    return {
        "rows": int(len(s)),
        "scored": int(ok.sum()),
        "low_rows": int(low.sum()),
        "low_against": int((low & pos).sum()),
        "high_rows": int(high.sum()),
        "high_against": int((high & ~pos).sum()),
    }


def binomial_p(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how surprising k disagreements are at the allowed level p.

    >>> round(binomial_p(10, 100, 0.02), 6), binomial_p(0, 100, 0.02)
    (3.4e-05, 1.0)
    """
    from scipy.stats import binom

    if k <= 0:
        return 1.0
    if p >= 1:
        return 1.0
    return float(binom.sf(k - 1, n, max(p, 0.0)))


class LabelAgreementCounts(TableMetricProvider):
    """Counts of :func:`agreement_counts` over the batch (pandas)."""

    metric_name = METRIC
    value_keys = ("label_column", "score_column", "positive", "low_cut", "high_cut")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(
        cls,
        execution_engine: PandasExecutionEngine,
        metric_domain_kwargs: dict,
        metric_value_kwargs: dict,
        metrics: dict[str, Any],
        runtime_configuration: dict,
    ) -> dict[str, int]:
        df, _, _ = execution_engine.get_compute_domain(
            domain_kwargs=metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE
        )
        v = metric_value_kwargs
        for col in (v["label_column"], v["score_column"]):
            if col not in df.columns:
                raise KeyError(f"column '{col}' is not in the batch")
        return agreement_counts(
            df[v["label_column"]], df[v["score_column"]], v["positive"], v["low_cut"], v["high_cut"]
        )


class ExpectLabelsToAgreeWithChampion(BatchExpectation):
    """Labels agree with the champion's confident scores as well as they did on its training data.

    Fails when the share of confident negatives labelled positive is significantly above
    ``low_reference + low_tolerance`` or the share of confident positives labelled negative
    significantly above ``high_reference + high_tolerance`` (one-sided binomial tests at ``alpha``),
    and the disagreements beyond that level are at least ``min_share`` of the batch's rows (a few
    contradicted labels in a big window cannot poison a model; concept drift produces a few).
    """

    label_column: str
    score_column: str
    positive: int | float | str | bool
    low_cut: _Number
    high_cut: _Number
    low_reference: _Number = 0.0
    high_reference: _Number = 0.0
    low_tolerance: _Number = 0.015
    high_tolerance: _Number = 0.05
    alpha: _Number = pydantic.Field(default=0.001)
    min_share: _Number = 0.001

    metric_dependencies = (METRIC,)
    success_keys = (  # the metric's value keys travel as success keys (GE hands only these on)
        "label_column",
        "score_column",
        "positive",
        "low_cut",
        "high_cut",
        "low_reference",
        "high_reference",
        "low_tolerance",
        "high_tolerance",
        "alpha",
        "min_share",
    )
    args_keys = ("label_column", "score_column", "positive", "low_cut", "high_cut")
    library_metadata: ClassVar[dict[str, Any]] = {
        "maturity": "experimental",
        "tags": ["rtml", "labels"],
        "contributors": ["rtml"],
        "requirements": ["scipy"],
    }

    def _validate(
        self,
        metrics: dict,
        runtime_configuration: dict | None = None,
        execution_engine: Any = None,
    ) -> dict[str, Any]:
        counts = metrics[METRIC]
        kw = self._get_success_kwargs()
        alpha, min_share = float(kw["alpha"]), float(kw["min_share"])
        sides = {}
        for side, what in (
            ("low", "confident negatives labelled positive"),
            ("high", "confident positives labelled negative"),
        ):
            n, k = counts[f"{side}_rows"], counts[f"{side}_against"]
            ref = float(kw[f"{side}_reference"])
            allowed = min(1.0, ref + float(kw[f"{side}_tolerance"]))
            p = binomial_p(k, n, allowed)
            excess = (k - allowed * n) / max(counts["rows"], 1)  # disagreement beyond the allowed level
            sides[side] = {
                "rows": n,
                "against": k,
                "share": round(k / n, 6) if n else None,
                "reference": round(ref, 6),
                "allowed": round(allowed, 6),
                "p_value": p,
                "excess_share_of_rows": round(excess, 6),
                "passed": p >= alpha or excess < min_share,
                "what": what,
            }
        details = {**counts, **sides, "alpha": alpha, "min_share": min_share}
        if counts["rows"] and not counts["scored"]:
            observed = f"none of {counts['rows']} rows has a champion score and a label"
            return {"success": False, "result": {"observed_value": observed, "details": details}}
        failed = [s for s in sides.values() if not s["passed"]]
        shown = failed or list(sides.values())
        observed = "; ".join(
            f"{s['against']}/{s['rows']} {s['what']} ({100 * (s['share'] or 0):.2f}%, allowed "
            f"{100 * s['allowed']:.2f}%, p={s['p_value']:.2g})"
            for s in shown
        )
        return {
            "success": not failed,
            "result": {"observed_value": observed, "details": details},
        }


def champion_scores(frame: pd.DataFrame, spec: StreamSpec, champion: Any) -> pd.Series:
    """The champion's score of every row: on the model inputs when the frame has them (the labelled
    store keeps the features events were scored on), else after featurising raw events (a batch file).
    Raises ValueError when the rows cannot be scored."""
    columns = list(champion.columns)
    if not set(columns) <= set(frame.columns):
        try:
            frame = featurise_history(frame, spec)
        except Exception as exc:  # noqa: BLE001 - any featurising failure: the batch cannot be scored
            raise ValueError(f"cannot featurise the batch for the champion: {exc}") from None
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"the batch lacks the champion's input(s) {', '.join(missing)}")
    try:
        scores = champion.learner.score(frame[columns])
    except Exception as exc:  # noqa: BLE001 - a learner failing on bad input: say why, one line
        raise ValueError(f"the champion cannot score the batch: {exc}") from None
    return pd.Series(np.asarray(scores, dtype=float), index=frame.index)
