"""The explanation part of ``check_learner``: contributions of a family that implements them.

Run by :func:`rtml.models.learners.check.check_learner` on a trained learner, after the scoring
checks; each check is named in :data:`EXPLAIN_CHECKS` (also part of ``check.CHECKS``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import pandas as pd
from scipy.special import expit

from rtml.models.learners.base import Learner
from rtml.models.learners.explain import OUTPUTS, Contributions

#: How close ``base + contributions`` must come to the raw output (relative to max(1, |raw|)).
SUM_TOLERANCE = 1e-6

EXPLAIN_CHECKS = (
    "explains a mini-batch",
    "contributions add up to the raw output",
    "the raw output gives the score",
    "explains each row on its own",
    "explains missing, non-finite and unseen inputs",
    "score_explained() gives the scores and the top k",
)


def _require(ok: bool, detail: str) -> None:
    if not ok:
        raise AssertionError(detail)


def _contributions(model: Learner, X: pd.DataFrame, inputs: list[str]) -> Contributions:
    c = model.contributions(X)
    _require(isinstance(c, Contributions), f"contributions() returned {type(c).__name__}")
    _require(
        list(c.features) == inputs, f"contributions name {list(c.features)}, not the model inputs {inputs}"
    )
    n, f = len(X), len(inputs)
    _require(c.values.shape == (n, f), f"contribution values have shape {c.values.shape}, not {(n, f)}")
    _require(c.base.shape == (n,) and c.raw.shape == (n,), "base and raw need one value per row")
    _require(c.output in OUTPUTS, f"output {c.output!r} is not one of {OUTPUTS}")
    bad = int((~np.isfinite(c.values)).sum() + (~np.isfinite(c.base)).sum() + (~np.isfinite(c.raw)).sum())
    _require(bad == 0, f"{bad} contribution, base or raw values are not finite")
    return c


def check_explanations(
    check: Callable[[str], AbstractContextManager[None]],
    model: Learner,
    X: pd.DataFrame,
    scores: np.ndarray,
    odd: pd.DataFrame,
    inputs: list[str],
) -> None:
    """The :data:`EXPLAIN_CHECKS` on a trained learner: ``scores`` are its scores of ``X``, ``odd`` a
    copy of ``X`` with missing, non-finite and unseen values, ``inputs`` the spec's model inputs."""
    with check("explains a mini-batch"):
        c = _contributions(model, X, inputs)
    with check("contributions add up to the raw output"):
        gap = np.abs(c.base + c.values.sum(axis=1) - c.raw) / np.maximum(1.0, np.abs(c.raw))
        _require(
            bool(gap.max() <= SUM_TOLERANCE),
            f"base + contributions differ from the raw output by up to {gap.max():.3g} "
            f"(row {int(gap.argmax())}; tolerance {SUM_TOLERANCE})",
        )
    with check("the raw output gives the score"):
        if c.output == "log_odds":
            _require(np.allclose(expit(c.raw), scores, rtol=1e-9, atol=1e-12), "expit(raw) is not the score")
        elif c.output in ("probability", "prediction"):
            _require(np.allclose(c.raw, scores, rtol=1e-9, atol=1e-12), f"the {c.output} is not the score")
        else:  # a distance: the score rises with it
            by_raw = scores[np.argsort(c.raw, kind="stable")]
            _require(bool((np.diff(by_raw) >= -1e-12).all()), "scores do not rise with the distance")
    with check("explains each row on its own"):
        rows = [0, 1, len(X) // 2, len(X) - 1]
        alone = np.vstack([_contributions(model, X.iloc[[i]], inputs).values for i in rows])
        _require(
            np.allclose(alone, c.values[rows], rtol=1e-9, atol=1e-12),
            "rows explained in one-row frames differ from the same rows explained in the batch",
        )
    with check("explains missing, non-finite and unseen inputs"):
        _contributions(model, odd, inputs)
    with check("score_explained() gives the scores and the top k"):
        for k in (1, 3, len(inputs) + 2):
            s, e = model.score_explained(X, k)
            _require(np.allclose(s, scores, rtol=1e-12, atol=1e-15), "its scores differ from score()")
            want = c.top(k)
            kk = min(k, len(inputs))
            _require(
                e.features.shape == (len(X), kk) and (e.features == want.features).all(),
                f"top {k} features differ from contributions().top({k})",
            )
            _require(np.allclose(e.values, want.values, rtol=1e-9, atol=1e-12), f"top {k} values differ")
            _require(np.allclose(e.rest, want.rest, rtol=1e-9, atol=1e-9), f"top {k} rest differs")
