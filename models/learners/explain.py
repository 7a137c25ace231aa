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
        order = _largest(np.abs(self.values), k)
        values = np.take_along_axis(self.values, order, axis=1)
        names = np.asarray(self.features, dtype=object)[order]
        rest = self.values.sum(axis=1) - values.sum(axis=1)
        return Explanation(names, values, rest, self.base, self.output)


def _largest(a: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest values per row, largest first, the earlier column on ties
    (as a stable descending sort). For small k, k passes of argmax: several times faster than
    sorting every row of a tall, narrow array."""
    if k > 4:
        return np.argsort(-a, axis=1, kind="stable")[:, :k]
    a = a.copy()
    rows = np.arange(len(a))
    out = np.empty((len(a), k), dtype=np.intp)
    for j in range(k):
        out[:, j] = a.argmax(axis=1)
        a[rows, out[:, j]] = -np.inf
    return out


def grouping(numeric: list[str], categories: dict[str, list[str]]) -> tuple[tuple[str, ...], np.ndarray]:
    """(model input names, the first encoded column of each) for an IncrementalEncoder's columns.

    The encoder's columns are the numeric inputs, then each categorical input's one-hot block
    (its categories plus the unknown slot, already part of ``categories``' lists); :func:`group` sums
    encoded columns into model inputs with these starts.

    >>> names, starts = grouping(["x"], {"c": ["a", "b", "__unknown__"]})
    >>> names, starts.tolist()
    (('x', 'c'), [0, 1])
    >>> group(np.array([[1.0, 2.0, 3.0, 4.0]]), starts).tolist()
    [[1.0, 9.0]]
    """
    names = (*numeric, *categories)
    widths = [1] * len(numeric) + [len(v) for v in categories.values()]
    return names, np.cumsum([0, *widths[:-1]]).astype(np.intp)


def group(values: np.ndarray, starts: np.ndarray, *, transposed: bool = False) -> np.ndarray:
    """Encoded columns summed per model input (``starts`` from :func:`grouping`), vectorised.

    ``transposed``: ``values`` holds one row per encoded column (contiguous rows sum faster than the
    few columns of a tall array). Returns one row per event, one column per model input.
    """
    rows = values if transposed else np.ascontiguousarray(values.T)
    out = np.empty((len(starts), rows.shape[1]))
    ends = [*starts[1:], rows.shape[0]]
    for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
        out[i] = rows[a] if b - a == 1 else rows[a:b].sum(axis=0)
    return np.ascontiguousarray(out.T)


def linear(
    parts: tuple[np.ndarray, list[np.ndarray]],
    widths: list[int],
    weights: np.ndarray,
    intercept: float,
    reference: np.ndarray,
    names: tuple[str, ...],
    raw: np.ndarray,
    output: str,
) -> Contributions:
    """Contributions of a linear model on an IncrementalEncoder's parts (scaled numeric block, each
    categorical input's codes into its one-hot block of ``widths[i]`` columns): ``w_j (z_j - ref_j)``
    per encoded column, summed per model input -- for a one-hot block ``w[code] - w . ref`` -- and the
    base ``intercept + w . ref``. This is SHAP's linear explainer with an independent masker whose
    background mean is ``reference``."""
    num, codes = parts
    n_num = num.shape[1]
    rows = np.empty((len(names), len(num)))  # one row per model input: contiguous, fast to fill
    rows[:n_num] = num.T * weights[:n_num, None]
    rows[:n_num] -= (reference[:n_num] * weights[:n_num])[:, None]
    start = n_num
    for i, (c, width) in enumerate(zip(codes, widths, strict=True)):
        w, ref = weights[start : start + width], reference[start : start + width]
        rows[n_num + i] = w[c] - float(w @ ref)
        start += width
    base = np.full(len(num), float(intercept + weights @ reference))
    return Contributions(names, np.ascontiguousarray(rows.T), base, raw, output)


def distance_shares(
    parts: tuple[np.ndarray, list[np.ndarray]],
    widths: list[int],
    centres: np.ndarray,
    nearest: np.ndarray,
    distance: np.ndarray,
    names: tuple[str, ...],
) -> Contributions:
    """Each model input's share of the squared distance from a row (an IncrementalEncoder's parts) to
    its nearest centre (``centres`` encoded, ``nearest`` the row's), scaled so that a row's shares add
    up to its ``distance``. For a one-hot block with the centre's block ``mu``: ``sum(mu^2) - 2 mu[code]
    + 1``."""
    num, codes = parts
    n_num = num.shape[1]
    rows = np.empty((len(names), len(num)))
    rows[:n_num] = (num.T - centres[nearest, :n_num].T) ** 2
    start = n_num
    for i, (c, width) in enumerate(zip(codes, widths, strict=True)):
        mu = centres[:, start : start + width]
        rows[n_num + i] = np.maximum((mu**2).sum(axis=1)[nearest] - 2 * mu[nearest, c] + 1.0, 0.0)
        start += width
    total = rows.sum(axis=0)
    scale = np.divide(distance, total, out=np.zeros_like(distance), where=total > 0)
    rows *= scale
    return Contributions(names, np.ascontiguousarray(rows.T), np.zeros(len(num)), distance, "distance")
