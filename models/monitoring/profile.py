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
    return out


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
