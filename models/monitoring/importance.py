"""Global importance of a model version: each model input's mean |contribution| on its holdout.

Computed from the learner's own per-event contributions
(:meth:`rtml.models.learners.base.Learner.contributions`), so it is in the units the explanations
of its scores use (log-odds, probability, prediction or distance). Logged with every registered
version as metrics ``importance.<input>`` (shown by ``rtml models`` and the drift report), as
``explain/importance.json`` and as a bar chart ``explain/importance.png``.

>>> importance_from_metrics({"importance.amount": 0.5, "importance.channel": 1.5, "holdout_f1": 0.9})
{'channel': 1.5, 'amount': 0.5}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

METRIC_PREFIX = "importance."
ARTIFACT = "explain/importance.json"
PLOT = "explain/importance.png"


def global_importance(learner: Any, X: pd.DataFrame) -> tuple[dict[str, float], str | None]:
    """(mean |contribution| per model input over ``X``, largest first; what the contributions add up
    to). ({}, None) if the family does not explain or ``X`` is empty."""
    explains = getattr(type(learner), "explains", None)
    if explains is None or not explains() or len(X) == 0:
        return {}, None
    c = learner.contributions(X)
    mean = np.abs(c.values).mean(axis=0)
    order = np.argsort(-mean, kind="stable")
    return {c.features[i]: float(mean[i]) for i in order}, c.output


def importance_from_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The ``importance.<input>`` metrics of a version's run, largest first."""
    got = {k[len(METRIC_PREFIX) :]: float(v) for k, v in metrics.items() if k.startswith(METRIC_PREFIX)}
    return dict(sorted(got.items(), key=lambda kv: -kv[1]))


def figure(importance: dict[str, float], title: str) -> Any:
    """A horizontal bar chart of the importance, largest on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importance)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1.2))
    ax.barh(names, [importance[n] for n in names], color="tab:blue")
    ax.set_xlabel("mean |contribution|")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def log_importance(run_id: str, importance: dict[str, float], output: str | None, version: str) -> None:
    """Metrics, JSON and plot of a version's global importance into its (ended) MLflow run."""
    if not importance:
        return
    import matplotlib.pyplot as plt
    import mlflow

    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"{METRIC_PREFIX}{k}": v for k, v in importance.items()})
        mlflow.log_dict(importance, ARTIFACT)
        fig = figure(importance, f"v{version}: mean |contribution| to the {output} on its holdout")
        mlflow.log_figure(fig, PLOT)
        plt.close(fig)


def summary(importance: dict[str, float], top: int = 3) -> str:
    """``amount 1.2, distance_from_home_km 0.8, channel 0.3`` (the ``top`` largest).

    >>> summary({"a": 1.234, "b": 0.5, "c": 0.1, "d": 0.0}, top=2)
    'a 1.23, b 0.5'
    """
    return ", ".join(f"{k} {v:.3g}" for k, v in list(importance.items())[:top])
