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


def compact_json(table: Any, k: int) -> Any:
    """Per row of a score table the JSON text ``{"feature": contribution, ...}`` of its top ``k`` (rank
    order, contributions rounded to 6 decimals), or ``null`` without an explanation: an Arrow string
    array built by Arrow's vectorised string kernels (no per-row Python)."""
    import json

    import pyarrow as pa
    import pyarrow.compute as pc

    parts: list[Any] = []
    for i in range(1, k + 1):
        names = table.column(feature_column(i))
        if names.null_count == len(names):
            break  # fewer model inputs than k
        for name in pc.unique(names).drop_null().to_pylist():
            if json.dumps(name) != f'"{name}"':
                raise ValueError(f"feature name {name!r} needs JSON escaping")
        value = pc.cast(pc.round(table.column(contribution_column(i)), 6), pa.string())
        parts += [","] if parts else []
        parts += ['"', names, '":', value]
    if not parts:
        return pa.nulls(table.num_rows, pa.string())
    return pc.binary_join_element_wise("{", *parts, "}", "")


def with_explanations(lines: list[str], table: Any, k: int) -> list[str]:
    """JSON lines (one object per score row of ``table``) with the row's ``"explanation"`` added."""
    import pyarrow as pa
    import pyarrow.compute as pc

    body = pc.fill_null(compact_json(table, k), "null")
    objects = pc.utf8_slice_codeunits(pa.array(lines, pa.string()), 0, -1)  # without the closing brace
    return pc.binary_join_element_wise(objects, ',"explanation":', body, "}", "").to_pylist()


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
