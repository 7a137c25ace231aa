"""Explanations in the score rows: the top-k contributions as flat columns, and read back.

With ``scoring.explain_top_k`` = k > 0 every score row carries, for ranks i = 1..k (largest
magnitude first), ``explain_<i>_feature`` (a model input's name) and ``explain_<i>_contribution``
(signed, in the units of ``explain_output``), plus ``explain_base`` and ``explain_rest`` (the other
inputs' contributions): ``base + contributions + rest`` is the model's raw output (log-odds for
``sgd_logistic``, the probability for ``hoeffding_tree``, the distance for ``streaming_kmeans``,
the prediction for ``streaming_linear``). Flat columns keep the Spark and Arrow schema simple and
the filling vectorised.

>>> [n for n, _ in explain_columns(2)]  # doctest: +NORMALIZE_WHITESPACE
['explain_1_feature', 'explain_1_contribution', 'explain_2_feature', 'explain_2_contribution',
 'explain_base', 'explain_rest', 'explain_output']
>>> explain_top_k_of(["score", "explain_1_feature", "explain_2_feature"])
2
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from rtml.models.learners.explain import Explanation


def feature_column(i: int) -> str:
    return f"explain_{i}_feature"


def contribution_column(i: int) -> str:
    return f"explain_{i}_contribution"


def explain_columns(k: int) -> list[tuple[str, str]]:
    """(name, Spark type) of the explanation columns of a score row, for the top ``k``."""
    ranks = [
        c
        for i in range(1, k + 1)
        for c in ((feature_column(i), "string"), (contribution_column(i), "double"))
    ]
    return [*ranks, ("explain_base", "double"), ("explain_rest", "double"), ("explain_output", "string")]


def explain_top_k_of(columns: Iterable[str]) -> int:
    """How many ranks a score table (its column names) carries; 0 without explanations."""
    names = set(columns)
    k = 0
    while feature_column(k + 1) in names:
        k += 1
    return k


def can_explain(learner: Any) -> bool:
    """Whether a learner's family explains its scores (a stand-in without the contract does not)."""
    explains = getattr(type(learner), "explains", None)
    return bool(explains is not None and explains())


def fill(out: pd.DataFrame, valid: np.ndarray, explanation: Explanation | None, k: int) -> None:
    """Add the explanation columns to ``out``; ``explanation`` holds the rows where ``valid`` is true
    (None: no explanations, every explanation column null). Vectorised: one assignment per column."""
    n = len(out)
    got = 0 if explanation is None else explanation.features.shape[1]
    every = bool(valid.all())

    def column(rows: np.ndarray | str | None, dtype: object) -> np.ndarray:
        if every and isinstance(rows, np.ndarray):
            return rows  # every row scored: the explanation's own column, no copy
        col = np.full(n, None if dtype is object else np.nan, dtype=dtype)  # type: ignore[call-overload]
        if rows is not None:
            col[valid] = rows
        return col

    for i in range(k):
        explained = explanation is not None and i < got
        out[feature_column(i + 1)] = column(explanation.features[:, i] if explained else None, object)  # type: ignore[union-attr]
        out[contribution_column(i + 1)] = column(explanation.values[:, i] if explained else None, float)  # type: ignore[union-attr]
    out["explain_base"] = column(None if explanation is None else explanation.base, float)
    out["explain_rest"] = column(None if explanation is None else explanation.rest, float)
    out["explain_output"] = column(None if explanation is None else explanation.output, object)


def compact(frame: pd.DataFrame, k: int) -> list[dict[str, float] | None]:
    """Per row ``{feature: contribution}`` of the top ``k`` (rank order), for the scores topic."""
    names = [frame[feature_column(i)].tolist() for i in range(1, k + 1)]
    values = [frame[contribution_column(i)].round(6).tolist() for i in range(1, k + 1)]
    rows: list[dict[str, float] | None] = []
    for ns, vs in zip(zip(*names, strict=True), zip(*values, strict=True), strict=True):
        row = {n: v for n, v in zip(ns, vs, strict=True) if n is not None}
        rows.append(row or None)
    return rows


def explanation_of(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The explanation stored in one score row (a mapping of its columns), or None if it has none."""
    k = explain_top_k_of(row)
    top = [
        {"feature": row[feature_column(i)], "contribution": float(row[contribution_column(i)])}
        for i in range(1, k + 1)
        if isinstance(row[feature_column(i)], str)
    ]
    if not top:
        return None

    def num(key: str) -> float | None:
        v = row.get(key)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    base, rest = num("explain_base"), num("explain_rest")
    raw = None if base is None or rest is None else base + rest + sum(t["contribution"] for t in top)
    return {"output": row.get("explain_output"), "base": base, "top": top, "rest": rest, "raw": raw}
