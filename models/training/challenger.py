"""Challenger training: window selection, incremental (warm start) or full retrain, evaluation data.

The window is every labelled event newer than the champion's training watermark (incremental), at
most ``retrain.window_limit`` of event time before the newest one, or newer than now - sliding_window
(full). Its newest ``holdout_fraction`` by event time is the
holdout: neither model has trained on it, and both are judged on it. For a thresholded task, the
newest ``validation_fraction`` of the rest is the validation split: the challenger does not learn
from it this round (the training watermark stops before it, so the next window starts with it) and
its decision threshold is chosen there to dominate the champion's operating point
(:func:`choose_threshold`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rtml.features.featurise import EVENT_MS
from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec, parse_duration_seconds
from rtml.models.evaluation.tasks import calibrate, is_regression, targets
from rtml.models.learners.families import make_learner


@dataclass
class Window:
    """``train`` is learned from, ``validation`` sets the challenger's threshold, ``holdout`` judges."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)
    validation: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def empty(self) -> bool:
        return self.train.empty or self.holdout.empty

    @property
    def labelled(self) -> pd.DataFrame:
        """Every row of the window (train, validation, holdout): what the quality gate checks."""
        return pd.concat([self.train, self.validation, self.holdout], ignore_index=True)


def labels_of(frame: pd.DataFrame, spec: StreamSpec) -> np.ndarray:
    """Training targets: binary labels, or the numeric target of a regression spec."""
    return targets(frame, spec)


def select_window(
    labelled: pd.DataFrame, spec: StreamSpec, settings: Settings, watermark_ms: int, now_ms: int | None = None
) -> Window:
    now_ms = now_ms or int(time.time() * 1000)
    if EVENT_MS not in labelled:  # nothing labelled yet: an empty window, not a KeyError
        labelled = pd.DataFrame({EVENT_MS: pd.Series(dtype="int64")})
    start_ms = watermark_ms
    if len(labelled):  # bounded in event time: rejected rounds do not grow the next window forever
        limit_ms = parse_duration_seconds(settings.retrain.window_limit) * 1000
        start_ms = max(watermark_ms, int(labelled[EVENT_MS].max()) - limit_ms)
    new = labelled[labelled[EVENT_MS] > start_ms].sort_values(EVENT_MS, kind="stable")
    if settings.retrain.mode == "full":
        start = now_ms - parse_duration_seconds(settings.retrain.sliding_window) * 1000
        base = labelled[labelled[EVENT_MS] > start].sort_values(EVENT_MS, kind="stable")
    else:
        base = new
    n_hold = int(len(new) * settings.promotion.holdout_fraction)
    holdout = new.iloc[len(new) - n_hold :] if n_hold else new.iloc[:0]
    cut = holdout[EVENT_MS].min() if n_hold else np.inf
    train, validation = split_validation(base[base[EVENT_MS] < cut], spec, settings)
    info = {
        "mode": settings.retrain.mode,
        "watermark_ms": int(watermark_ms),
        "start_ms": int(start_ms),
        "new_rows": int(len(new)),
        **describe(train, spec, "train"),
        **describe(validation, spec, "validation"),
        **describe(holdout, spec, "holdout"),
    }
    return Window(
        train.reset_index(drop=True), holdout.reset_index(drop=True), info, validation.reset_index(drop=True)
    )


def split_validation(
    rows: pd.DataFrame, spec: StreamSpec, settings: Settings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation) of time-ordered rows: the newest ``promotion.validation_fraction`` is the
    validation split (where a classifier's threshold is chosen); regression has none."""
    n_val = 0 if is_regression(spec) else int(len(rows) * settings.promotion.validation_fraction)
    return rows.iloc[: len(rows) - n_val], rows.iloc[len(rows) - n_val :]


def describe(frame: pd.DataFrame, spec: StreamSpec, prefix: str) -> dict[str, Any]:
    """Rows, class counts (or target mean), event-time span and offsets of one split, ``prefix_*`` keys."""
    out: dict[str, Any] = {f"{prefix}_rows": int(len(frame))}
    if len(frame):
        y = labels_of(frame, spec)
        if is_regression(spec):
            out[f"{prefix}_target_mean"] = round(float(np.nanmean(y)), 6)
        else:
            out |= {f"{prefix}_positives": int(y.sum()), f"{prefix}_negatives": int(len(y) - y.sum())}
        out |= {
            f"{prefix}_from_ms": int(frame[EVENT_MS].min()),
            f"{prefix}_to_ms": int(frame[EVENT_MS].max()),
        }
        if "partition" in frame and "offset" in frame:
            for p, g in frame.groupby("partition"):
                out[f"{prefix}_offsets_p{int(p)}"] = f"{int(g['offset'].min())}-{int(g['offset'].max())}"
    return out


def train_challenger(
    champion: Any,
    window: Window,
    spec: StreamSpec,
    mode: str,
    seed: int = 0,
    family: str | None = None,
    params: dict[str, Any] | None = None,
    epochs: int | None = None,
    batch: int = 5000,
    record: dict[str, Any] | None = None,
) -> Any:
    """Incremental: copy of the champion's learner, continued on the window. Full: a fresh learner.
    ``epochs`` shuffled passes over the training rows (None: the learner family's own).

    How its threshold was chosen goes into ``record`` as ``threshold_*`` keys (default: the window's
    info, logged with the window; several candidates of one window each pass their own dict)."""
    learner = (
        copy.deepcopy(champion.learner)
        if mode == "incremental"
        else make_learner(spec, family or champion.learner.family, params, seed=seed)
    )
    X = window.train[champion.columns]
    y = labels_of(window.train, spec)
    rng = np.random.default_rng(seed)
    for _ in range(epochs or learner.epochs):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch):
            idx = order[start : start + batch]
            learner.learn(X.iloc[idx], y[idx])
    choice = choose_threshold(spec, champion, learner, window.validation)
    if choice is None:  # no validation labels: the best-F1 threshold on the training rows, as before
        calibrate(spec, learner, y, learner.score(X))
        choice = {"rule": "best F1 on the training rows (no validation positives)"}
    target = window.info if record is None else record
    target |= {f"threshold_{k}": v for k, v in choice.items()}
    return learner


def choose_threshold(spec: StreamSpec, champion: Any, learner: Any, validation: pd.DataFrame) -> dict | None:
    """Set the challenger's threshold on the validation split (never the holdout); what was chosen.

    Where the challenger's precision-recall curve allows it, the threshold dominates the champion's
    operating point there (precision and recall both >= the champion's, the point most likely to
    beat it on precision, recall and F1 at once); otherwise the best-F1 threshold of the split.
    None (threshold untouched) for regression, or a split without positives.
    """
    from rtml.models.evaluation.metrics import best_f1_threshold, dominating_threshold

    if is_regression(spec) or validation.empty:
        return None
    y = labels_of(validation, spec)
    if y.sum() == 0:
        return None
    scores = learner.score(validation[champion.columns])
    champ = champion.learner.score(validation[champion.columns]) >= champion.learner.threshold
    found = dominating_threshold(y, scores, champ)
    if found is not None:
        learner.threshold, figures = found
        return {"rule": "dominates the champion on the validation split", **_rounded(figures)}
    learner.threshold = best_f1_threshold(y, scores, learner.threshold)
    return {
        "rule": "best F1 on the validation split (no dominating threshold, or the champion caught nothing)"
    }


def _rounded(figures: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in figures.items()}
