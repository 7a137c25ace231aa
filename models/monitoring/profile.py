"""Reference profile of a model version: what its training data and scores looked like.

Stored with every registered version as the MLflow artifact ``reference/profile.json`` and read
back by the data-quality gate (distribution bounds) and the drift monitor (PSI, KS, chi-square).

>>> import pandas as pd
>>> from rtml.infra.config.spec import load_spec
>>> spec = load_spec()
>>> frame = pd.DataFrame({"amount": np.arange(1000.0), "channel": ["pos", "online"] * 500})
>>> p = build_profile(frame, spec, scores=np.linspace(0, 1, 1000))
>>> p["numeric"]["amount"]["quantiles"][50], p["categorical"]["channel"]["online"]
(499.5, 0.5)
>>> round(quantile_of(p["numeric"]["amount"], 0.02), 2)
19.98
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rtml.infra.config.spec import StreamSpec

SAMPLE_SIZE = 1000
_QS = np.linspace(0, 1, 101)


def _numeric(values: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    n_all = len(values)
    values = values[np.isfinite(values)]
    if not len(values):
        return {"n": n_all, "null_rate": 1.0}
    sample = values if len(values) <= SAMPLE_SIZE else rng.choice(values, SAMPLE_SIZE, replace=False)
    return {
        "n": n_all,
        "null_rate": float(1 - len(values) / n_all),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "quantiles": [float(q) for q in np.quantile(values, _QS)],
        "sample": [float(f"{v:.6g}") for v in np.sort(sample)],
    }


def build_profile(
    frame: pd.DataFrame,
    spec: StreamSpec,
    scores: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-feature quantiles, a sample for KS tests, category frequencies, score distribution."""
    rng = np.random.default_rng(seed)
    numeric = {
        name: _numeric(pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float), rng)
        for name in spec.model_numeric_inputs
        if name in frame
    }
    categorical = {
        name: {str(k): float(v) for k, v in frame[name].astype(str).value_counts(normalize=True).items()}
        for name in spec.categorical_names
        if name in frame
    }
    out: dict[str, Any] = {"rows": int(len(frame)), "numeric": numeric, "categorical": categorical}
    if scores is not None:
        out["score"] = _numeric(np.asarray(scores, dtype=float), rng)
    if labels is not None and len(labels):
        out["positive_rate"] = float(np.mean(labels))
        if scores is not None:
            table = label_table(np.asarray(scores, dtype=float), np.asarray(labels))
            if table is not None:
                out["label_agreement"] = table
    return out


def label_table(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any] | None:
    """How the labels sit along the model's own scores, for the label-consistency gate.

    ``negative_edges`` are the percentiles (k = 0..100) of the negatives' scores; at each, the rows
    scored at or below it and how many of them are positive. ``positive_edges`` are the percentiles of
    the positives' scores; at each, the rows scored at or above it and how many are negative. None
    unless the labels are binary 0/1 with both classes present.

    >>> t = label_table(np.linspace(0, 1, 200), np.r_[np.zeros(180), np.ones(20)])
    >>> t["rows_le"][80], t["positives_le"][80], t["rows_ge"][50], t["negatives_ge"][50]
    (144, 0, 10, 0)
    """
    ok = np.isfinite(scores)
    s, y = scores[ok], labels[ok]
    if not np.isin(y, (0, 1)).all() or not (y == 1).any() or not (y == 0).any():
        return None
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order].astype(np.int64)
    low = np.quantile(s[y == 0], _QS)
    high = np.quantile(s[y == 1], _QS)
    le = np.searchsorted(s, low, side="right")  # rows with score <= edge
    ge_start = np.searchsorted(s, high, side="left")  # rows from here on have score >= edge
    pos = np.concatenate([[0], np.cumsum(y)])
    neg = np.concatenate([[0], np.cumsum(1 - y)])
    return {
        "negative_edges": [float(e) for e in low],
        "rows_le": [int(v) for v in le],
        "positives_le": [int(v) for v in pos[le]],
        "positive_edges": [float(e) for e in high],
        "rows_ge": [int(v) for v in len(s) - ge_start],
        "negatives_ge": [int(v) for v in neg[-1] - neg[ge_start]],
    }


def label_reference(profile: dict[str, Any] | None, low_q: float, high_q: float) -> dict[str, Any] | None:
    """Confidence cuts of a version and its reference disagreement levels, from its profile.

    The champion's confident negatives are rows scored at or below the ``low_q`` quantile of the
    scores it gave its reference negatives; its confident positives rows at or above the ``high_q``
    quantile of the scores of its reference positives. The reference levels are the shares labelled
    against it there on its own training data. None when the profile has no label table.
    """
    table = (profile or {}).get("label_agreement")
    if not table:
        return None
    lo, hi = int(round(low_q * 100)), int(round(high_q * 100))
    return {
        "low_cut": table["negative_edges"][lo],
        "low_reference": table["positives_le"][lo] / max(table["rows_le"][lo], 1),
        "high_cut": table["positive_edges"][hi],
        "high_reference": table["negatives_ge"][hi] / max(table["rows_ge"][hi], 1),
    }


def quantile_of(feature: dict[str, Any], q: float) -> float:
    """Quantile q of a profiled numeric feature (linear between the stored percentiles)."""
    return float(np.interp(q, _QS, feature["quantiles"]))


def load_profile(settings: Any, version: str) -> dict[str, Any] | None:
    """The reference profile of a registered version, or None for versions logged without one."""
    import json

    import mlflow
    from mlflow.exceptions import MlflowException

    from rtml.models.lifecycle.registry import PROFILE_ARTIFACT, client

    c = client(settings)
    run_id = c.get_model_version(settings.mlflow.model_name, version).run_id
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=PROFILE_ARTIFACT, tracking_uri=settings.tracking_uri
        )
    except (MlflowException, OSError):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
