"""Challenger training: window selection, incremental (warm start) or full retrain, evaluation data.

The window is every labelled event newer than the champion's training watermark (incremental),
or newer than now - sliding_window (full). Its newest ``holdout_fraction`` by event time is the
holdout: neither model has trained on it, and both are judged on it.
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
    train: pd.DataFrame
    holdout: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.train.empty or self.holdout.empty


def labels_of(frame: pd.DataFrame, spec: StreamSpec) -> np.ndarray:
    """Training targets: binary labels, or the numeric target of a regression spec."""
    return targets(frame, spec)


def select_window(
    labelled: pd.DataFrame, spec: StreamSpec, settings: Settings, watermark_ms: int, now_ms: int | None = None
) -> Window:
    now_ms = now_ms or int(time.time() * 1000)
    if EVENT_MS not in labelled:  # nothing labelled yet: an empty window, not a KeyError
        labelled = pd.DataFrame({EVENT_MS: pd.Series(dtype="int64")})
    new = labelled[labelled[EVENT_MS] > watermark_ms].sort_values(EVENT_MS, kind="stable")
    if settings.retrain.mode == "full":
        start = now_ms - parse_duration_seconds(settings.retrain.sliding_window) * 1000
        base = labelled[labelled[EVENT_MS] > start].sort_values(EVENT_MS, kind="stable")
    else:
        base = new
    n_hold = int(len(new) * settings.promotion.holdout_fraction)
    holdout = new.iloc[len(new) - n_hold :] if n_hold else new.iloc[:0]
    cut = holdout[EVENT_MS].min() if n_hold else np.inf
    train = base[base[EVENT_MS] < cut]
    info = {
        "mode": settings.retrain.mode,
        "watermark_ms": int(watermark_ms),
        "new_rows": int(len(new)),
        **_describe(train, spec, "train"),
        **_describe(holdout, spec, "holdout"),
    }
    return Window(train.reset_index(drop=True), holdout.reset_index(drop=True), info)


def _describe(frame: pd.DataFrame, spec: StreamSpec, prefix: str) -> dict[str, Any]:
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
    epochs: int = 2,
    batch: int = 5000,
) -> Any:
    """Incremental: copy of the champion's learner, continued on the window. Full: a fresh learner."""
    learner = (
        copy.deepcopy(champion.learner)
        if mode == "incremental"
        else make_learner(spec, family or champion.learner.family, params, seed=seed)
    )
    X = window.train[champion.columns]
    y = labels_of(window.train, spec)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch):
            idx = order[start : start + batch]
            learner.learn(X.iloc[idx], y[idx])
    calibrate(spec, learner, y, learner.score(X))
    return learner
