"""Per-event explanations: additive feature contributions to a learner's raw output, and their top k.

A learner that explains (:meth:`rtml.models.learners.base.Learner.contributions`) returns
:class:`Contributions` for a mini-batch: one signed value per row and *model input* (a categorical
input's one-hot columns are summed under its own name), with ``base + values.sum(1) == raw``, where
``raw`` is the model output being explained (``output`` names it: log-odds, probability, prediction
or distance). :meth:`Contributions.top` keeps the ``k`` largest by magnitude per row, vectorised.

>>> c = Contributions(("a", "b", "c"), np.array([[0.5, -2.0, 0.1], [0.0, 0.2, 0.3]]),
...                   np.array([1.0, 1.0]), np.array([-0.4, 1.5]), "log_odds")
>>> e = c.top(2)
>>> e.features.tolist(), e.values.tolist()
([['b', 'a'], ['c', 'b']], [[-2.0, 0.5], [0.3, 0.2]])
>>> e.rest.round(12).tolist()
[0.1, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: What a family's contributions add up to (``Contributions.output``).
OUTPUTS = ("log_odds", "probability", "prediction", "distance")


@dataclass(frozen=True)
class Explanation:
    """The top ``k`` contributions of each row of a mini-batch, largest magnitude first.

    ``features`` (n, k) names, ``values`` (n, k) signed contributions, ``rest`` (n,) the sum of the
    other features' contributions and ``base`` (n,) the base value: ``base + values.sum(1) + rest``
    is the raw output ``output``.
    """

    features: np.ndarray
    values: np.ndarray
    rest: np.ndarray
    base: np.ndarray
    output: str


@dataclass(frozen=True)
class Contributions:
    """Additive contributions of every model input to the raw output of each row of a mini-batch."""

    features: tuple[str, ...]
    values: np.ndarray  # (n, len(features))
    base: np.ndarray  # (n,)
    raw: np.ndarray  # (n,): base + values.sum(1)
    output: str

    def top(self, k: int) -> Explanation:
        """The ``k`` contributions of largest magnitude per row (ties: the earlier input first)."""
        k = max(0, min(int(k), len(self.features)))
        order = np.argsort(-np.abs(self.values), axis=1, kind="stable")[:, :k]
        values = np.take_along_axis(self.values, order, axis=1)
        names = np.asarray(self.features, dtype=object)[order]
        rest = self.values.sum(axis=1) - values.sum(axis=1)
        return Explanation(names, values, rest, self.base, self.output)


def grouping(numeric: list[str], categories: dict[str, list[str]]) -> tuple[tuple[str, ...], np.ndarray]:
    """(model input names, a 0/1 matrix summing encoded columns into them) for an IncrementalEncoder.

    The encoder's columns are the numeric inputs, then each categorical input's one-hot block
    (its categories plus the unknown slot, already part of ``categories``' lists).

    >>> names, G = grouping(["x"], {"c": ["a", "b", "__unknown__"]})
    >>> names, G.tolist()
    (('x', 'c'), [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    """
    names = (*numeric, *categories)
    widths = [1] * len(numeric) + [len(v) for v in categories.values()]
    G = np.zeros((sum(widths), len(names)))
    G[np.arange(sum(widths)), np.repeat(np.arange(len(names)), widths)] = 1.0
    return names, G


def linear(
    Z: np.ndarray,
    weights: np.ndarray,
    intercept: float,
    reference: np.ndarray,
    grouped: tuple[tuple[str, ...], np.ndarray],
    raw: np.ndarray,
    output: str,
) -> Contributions:
    """Contributions of a linear model on encoded inputs ``Z``: ``w_j (z_j - reference_j)`` per column,
    summed per model input; the base is ``intercept + w . reference`` (SHAP's linear explainer with an
    independent masker whose background mean is ``reference``)."""
    names, G = grouped
    values = ((Z - reference) * weights) @ G
    base = np.full(len(Z), float(intercept + weights @ reference))
    return Contributions(names, values, base, raw, output)


def distance_shares(
    diff: np.ndarray, distance: np.ndarray, grouped: tuple[tuple[str, ...], np.ndarray]
) -> Contributions:
    """Each model input's share of the squared distance ``diff`` (row minus its nearest centre, encoded),
    scaled so that a row's shares add up to its ``distance``."""
    names, G = grouped
    sq = (diff**2) @ G
    total = sq.sum(axis=1)
    scale = np.divide(distance, total, out=np.zeros_like(distance), where=total > 0)
    return Contributions(names, sq * scale[:, None], np.zeros(len(diff)), distance, "distance")
