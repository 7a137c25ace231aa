"""The model families, selected by the ``model.family`` setting; every one is a :class:`Learner`.

| family | task | learner |
|---|---|---|
| ``sgd_logistic`` (default) | classification | logistic regression by SGD |
| ``hoeffding_tree`` | classification | River Hoeffding (adaptive) tree, batch scoring |
| ``streaming_kmeans`` | anomaly (promoted on P/R/F1 where labels exist) | streaming k-means distance |
| ``streaming_linear`` | regression | linear regression by SGD |

>>> from rtml.infra.config.spec import load_spec
>>> make_learner(load_spec(), "hoeffding_tree", {"grace_period": 50}).params()["grace_period"]
50
"""

from __future__ import annotations

from typing import Any

from rtml.infra.config.spec import StreamSpec
from rtml.models.learners.hoeffding_tree import HoeffdingTree
from rtml.models.learners.sgd_logistic import SGDLogistic
from rtml.models.learners.streaming_kmeans import StreamingKMeans
from rtml.models.learners.streaming_linear import StreamingLinearRegression

FAMILIES: dict[str, Any] = {
    "sgd_logistic": SGDLogistic,
    "hoeffding_tree": HoeffdingTree,
    "streaming_kmeans": StreamingKMeans,
    "streaming_linear": StreamingLinearRegression,
}
TASKS = {
    "sgd_logistic": ("classification",),
    "hoeffding_tree": ("classification",),
    "streaming_kmeans": ("anomaly", "classification"),
    "streaming_linear": ("regression",),
}


def make_learner(spec: StreamSpec, family: str, params: dict[str, Any] | None = None, seed: int = 0) -> Any:
    """A fresh learner of the family for this spec; a one-line ValueError for a bad family or task."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family '{family}' (choose from {', '.join(FAMILIES)})")
    if spec.task not in TASKS[family]:
        raise ValueError(f"model family '{family}' does not fit spec '{spec.name}' (task {spec.task})")
    try:
        return FAMILIES[family].for_spec(spec, seed=seed, **(params or {}))
    except TypeError as exc:
        raise ValueError(f"model.params for '{family}': {exc}") from None
