"""What depends on the spec's task: training targets, holdout metrics, the promotion rule.

Classification and anomaly specs have a binary target (label == positive), decisions by threshold,
precision / recall / F1 and :func:`rtml.models.evaluation.promotion.decide`; regression specs have a
numeric target, RMSE / MAE / R^2 and :func:`rtml.models.evaluation.promotion_regression.decide_regression`.

>>> import numpy as np, pandas as pd
>>> from rtml.infra.config.spec import load_spec
>>> targets(pd.DataFrame({"is_fraud": [1, 0, 1]}), load_spec()).tolist()
[1, 0, 1]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rtml.infra.config.spec import StreamSpec


def is_regression(spec: StreamSpec) -> bool:
    return spec.task == "regression"


def targets(frame: pd.DataFrame, spec: StreamSpec) -> np.ndarray:
    """Binary labels (label == positive) or, for regression, the numeric target."""
    assert spec.label is not None
    if is_regression(spec):
        return pd.to_numeric(frame[spec.label.field], errors="coerce").to_numpy(dtype=float)
    return (frame[spec.label.field] == spec.label.positive).to_numpy().astype(np.int64)


def holdout_metrics(
    spec: StreamSpec, y: np.ndarray, scores: np.ndarray, threshold: float
) -> dict[str, float]:
    from rtml.models.evaluation.metrics import classification_metrics
    from rtml.models.learners.streaming_linear import regression_metrics

    if is_regression(spec):
        return regression_metrics(y, scores)
    return classification_metrics(y, scores >= threshold)


def calibrate(spec: StreamSpec, learner: Any, y: np.ndarray, scores: np.ndarray) -> None:
    """Set the decision threshold to the best-F1 one (classification and anomaly only)."""
    from rtml.models.evaluation.metrics import best_f1_threshold

    if not is_regression(spec):
        learner.threshold = best_f1_threshold(y, scores, learner.threshold)


def judge(
    policy: Any, spec: StreamSpec, y: np.ndarray, champion: Any, challenger: Any, X: pd.DataFrame
) -> Any:
    """The promotion decision of two RtmlModels on the same holdout."""
    from rtml.models.evaluation.promotion import decide
    from rtml.models.evaluation.promotion_regression import decide_regression

    champ, chall = (
        champion.learner.score(X[champion.columns]),
        challenger.learner.score(X[challenger.columns]),
    )
    if is_regression(spec):
        return decide_regression(policy, y, champ, chall)
    return decide(
        policy,
        y,
        (champ >= champion.learner.threshold).astype(np.int64),
        (chall >= challenger.learner.threshold).astype(np.int64),
    )
