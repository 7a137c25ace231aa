"""`rtml bootstrap`: train an initial model on history, register version 1, alias it champion."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from rtml.features.featurise import EVENT_MS, event_ms_from_field, featurise_history, model_frame
from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec
from rtml.models.evaluation.tasks import calibrate, holdout_metrics, targets
from rtml.models.learners.families import make_learner
from rtml.models.lifecycle.aliases import ANY, ChampionMoved, LifecycleError, move_champion
from rtml.models.lifecycle.registry import CHAMPION, alias_version, log_and_register
from rtml.models.monitoring.importance import global_importance, log_importance
from rtml.models.monitoring.profile import build_profile
from rtml.models.training.retrain import WATERMARK_TAG


class BootstrapError(Exception):
    """One-line reason bootstrap cannot run."""


def history_end_ms(history: pd.DataFrame, spec: StreamSpec) -> int | None:
    """Event time (ms) of the newest history row: the first champion's training watermark."""
    if EVENT_MS in history:
        times = pd.to_numeric(history[EVENT_MS], errors="coerce")
    elif spec.event_time in history:
        times = event_ms_from_field(history[spec.event_time], spec)
    else:
        return None
    return int(times.max()) if times.notna().any() else None


def train_initial(
    spec: StreamSpec,
    history: pd.DataFrame,
    epochs: int = 3,
    seed: int = 0,
    family: str = "sgd_logistic",
    params: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, float], pd.DataFrame, np.ndarray]:
    """Time-ordered split: 70% train, 10% threshold calibration, 20% holdout."""
    if spec.label is None:
        raise BootstrapError(f"bootstrap needs labelled history; spec '{spec.name}' declares no label")
    try:
        learner = make_learner(spec, family, params, seed=seed)
    except ValueError as exc:
        raise BootstrapError(str(exc)) from None
    frame = featurise_history(history, spec).sort_values(EVENT_MS, kind="stable").reset_index(drop=True)
    X = model_frame(frame, spec)
    y = targets(frame, spec)
    n = len(frame)
    a, b = int(n * 0.7), int(n * 0.8)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(a)
        for start in range(0, a, 5000):
            idx = order[start : start + 5000]
            learner.learn(X.iloc[idx], y[idx])
    calibrate(spec, learner, y[a:b], learner.score(X.iloc[a:b]))
    hold = holdout_metrics(spec, y[b:], learner.score(X.iloc[b:]), learner.threshold)
    metrics = {f"holdout_{k}": float(v) for k, v in hold.items()}
    metrics["threshold"] = learner.threshold
    return learner, metrics, X, y


def bootstrap(
    settings: Settings,
    spec: StreamSpec,
    load_history: Callable[[], pd.DataFrame],
    seed: int = 7,
    force: bool = False,
) -> dict[str, Any]:
    """Train, register and alias the first champion (skipped if a champion exists, unless force).

    ``load_history`` is called only when there is something to do (see :mod:`rtml.flows.bootstrap`).
    """
    existing = alias_version(settings, CHAMPION)
    if existing is not None and not force:
        return {
            "ok": True,
            "skipped": True,
            "champion": existing,
            "reason": f"@{CHAMPION} already points to version {existing} (use --force to replace)",
        }
    history = load_history()
    t0 = time.monotonic()
    learner, metrics, X, y = train_initial(
        spec, history, seed=seed, family=settings.model.family, params=settings.model.params
    )
    params = {
        **learner.params(),
        "history_rows": len(history),
        "seed": seed,
        "spec": spec.name,
        "threshold": round(learner.threshold, 6),
    }
    tags = {"rtml.trigger": "bootstrap", "rtml.spec": spec.name, "rtml.parent_version": existing or "none"}
    seen_to = history_end_ms(history, spec)
    if seen_to is not None:  # the first retrain learns only from events after the history
        tags[WATERMARK_TAG] = str(seen_to)
    profile = build_profile(X, spec, scores=learner.score(X), labels=y)
    reg = log_and_register(
        settings, learner, X, params=params, metrics=metrics, tags=tags, run_name="bootstrap", profile=profile
    )
    holdout = X.iloc[int(len(X) * 0.8) :]  # train_initial's holdout
    log_importance(reg.run_id, *global_importance(learner, holdout), reg.version)
    try:  # an audited move like any other: record, @previous-champion, under the promotion lock
        moved = move_champion(
            settings,
            reg.version,
            kind="bootstrap",
            reason="bootstrap --force" if existing is not None else "first champion",
            extra={"trigger": "bootstrap", "run_id": reg.run_id},
            if_champion_is=ANY if force else None,  # without --force, a champion set meanwhile stays
        )
    except ChampionMoved as exc:  # a racing bootstrap made its champion first: keep it
        return {
            "ok": True,
            "skipped": True,
            "registered": reg.version,
            "champion": alias_version(settings, CHAMPION),
            "reason": f"registered version {reg.version}, but {exc}",
        }
    except LifecycleError as exc:
        raise BootstrapError(f"registered version {reg.version} but @{CHAMPION} not moved: {exc}") from None
    return {
        "ok": True,
        "skipped": False,
        "champion": reg.version,
        "previous_champion": moved["previous_champion"],
        "move_id": moved["move_id"],
        "run_id": reg.run_id,
        "metrics": metrics,
        "rows": len(history),
        "train_seconds": round(time.monotonic() - t0, 2),
    }
