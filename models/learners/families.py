"""The model families, selected by the ``model.family`` setting; every one is a :class:`Learner`.

| family | task | learner |
|---|---|---|
| ``sgd_logistic`` (default) | classification | logistic regression by SGD |
| ``hoeffding_tree`` | classification | River Hoeffding (adaptive) tree, batch scoring |
| ``streaming_kmeans`` | anomaly (promoted on P/R/F1 where labels exist) | streaming k-means distance |
| ``streaming_linear`` | regression | linear regression by SGD |

No list here to keep in step: a :class:`Learner` subclass registers itself under its ``family`` when
it is defined (:func:`rtml.models.learners.base.registered`); this module imports the built-in ones.
A third-party family is available once the module defining it has been imported.

>>> from rtml.infra.config.spec import load_spec
>>> make_learner(load_spec(), "hoeffding_tree", {"grace_period": 50}).params()["grace_period"]
50
>>> TASKS["streaming_linear"]
('regression',)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from rtml.infra.config.spec import StreamSpec
from rtml.models.learners import (  # noqa: F401 - imported to define (register) the built-in families
    hoeffding_tree,
    sgd_logistic,
    streaming_kmeans,
    streaming_linear,
)
from rtml.models.learners.base import Learner, registered

#: Every registered family's class by name (read-only, live: third-party families appear once defined).
FAMILIES: Mapping[str, type[Learner]] = registered()


class _Tasks(Mapping[str, tuple[str, ...]]):
    """The spec tasks of every registered family, read from the classes (live, like :data:`FAMILIES`)."""

    def __getitem__(self, family: str) -> tuple[str, ...]:
        return FAMILIES[family].tasks

    def __iter__(self) -> Iterator[str]:
        return iter(FAMILIES)

    def __len__(self) -> int:
        return len(FAMILIES)

    def __repr__(self) -> str:
        return repr(dict(self))


#: Every registered family's spec tasks by name.
TASKS: Mapping[str, tuple[str, ...]] = _Tasks()


def make_learner(
    spec: StreamSpec, family: str, params: dict[str, Any] | None = None, seed: int = 0
) -> Learner:
    """A fresh learner of the family for this spec; a one-line ValueError for a bad family, task or params."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family '{family}' (choose from {', '.join(sorted(FAMILIES))})")
    cls = FAMILIES[family]
    if spec.task not in cls.tasks:
        raise ValueError(f"model family '{family}' does not fit spec '{spec.name}' (task {spec.task})")
    try:
        return cls.for_spec(spec, seed=seed, **(params or {}))
    except TypeError as exc:
        raise ValueError(f"model.params for '{family}': {exc}") from None
