"""Change-point-aware window for ``fresh`` candidates (``retrain.fresh_since_change``).

After a concept drift the retrain window mixes the old concept and the new one: a fresh learner
trained on all of it half-learns the old concept. Here the champion's labelled error stream (its
residuals, label - score) over the window's training and validation rows (in event-time order) goes
through River's ADWIN; when ADWIN detects a change, the change point is located as the split that
best separates the mean before and after it (the most likely single mean shift), and fresh candidates train
and choose their threshold only on the rows after it -- if at least ``retrain.change_min_rows``
remain. The holdout is untouched: every candidate and the champion are still judged on the same
rows. ``continue`` candidates keep the whole window.

A change so recent that fewer than ``change_min_rows`` training and validation rows follow it -- the
first retrain after a drift, whose post-drift labels are all in the holdout -- moves the holdout
(:func:`resplit_after_change`): it becomes the newest rows after the change (the concept the next
champion will serve; ``promotion.holdout_fraction`` of the rows after the change found over the
whole window), fresh candidates train on the rows after the change (found again without the
holdout) before it, and ``continue`` candidates on every row before it; all are still judged on the
same holdout, one retrain earlier than with the holdout as selected. Only the newest change is
looked at this way when :func:`since_change` found none it can train after.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> errors = np.r_[rng.random(2000) < 0.05, rng.random(1500) < 0.25].astype(float)  # 0/1 or real
>>> found = detect_change(errors)
>>> found.detected_at > 2000 and abs(found.index - 2000) < 50
True
>>> detect_change((rng.random(3000) < 0.1).astype(float)) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rtml.features.featurise import EVENT_MS
from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec
from rtml.models.evaluation.tasks import is_regression, targets

SINCE_TAG = "rtml.window_since_ms"  # on a fresh version trained after a detected change


@dataclass(frozen=True)
class Change:
    """``index``: first row of the new regime; ``detected_at``: the row where ADWIN fired."""

    index: int
    detected_at: int


_SEPARATE_ROWS = 200  # ADWIN firings further apart than this belong to different changes


def detect_change(errors: np.ndarray, delta: float = 0.002) -> Change | None:
    """ADWIN over the error stream; on a detection, the change point located by the mean-shift split
    (max of k(n-k)/n * (mean before - mean after)^2) of the newest change: searched after the last
    firing of an earlier, separate detection and up to the last firing. None when ADWIN detects nothing.

    >>> rng = np.random.default_rng(3)
    >>> two = np.r_[rng.random(1000) < 0.05, rng.random(1000) < 0.3, rng.random(1000) < 0.6]
    >>> abs(detect_change(two.astype(float)).index - 2000) < 100  # the newest of two changes
    True
    """
    from river import drift

    x = np.asarray(errors, dtype=float)
    adwin = drift.ADWIN(delta=delta)
    fired: list[int] = []
    for i, e in enumerate(x):
        adwin.update(float(e))
        if adwin.drift_detected:
            fired.append(i)
    if not fired:
        return None
    last = fired[-1]
    earlier = [f for f in fired if f < last - _SEPARATE_ROWS]
    lo = earlier[-1] + 1 if earlier else 0
    seg = x[lo:]
    n = len(seg)
    cum = np.cumsum(seg)
    k = np.arange(1, min(n - 1, last - lo + 1) + 1)  # splits up to the last firing, both sides non-empty
    if not len(k):
        return Change(lo, last)
    before, after = cum[k - 1] / k, (cum[-1] - cum[k - 1]) / (n - k)
    stat = k * (n - k) / n * (before - after) ** 2
    return Change(lo + int(k[int(np.argmax(stat))]), last)


def champion_residuals(spec: StreamSpec, champion: Any, frame: pd.DataFrame) -> list[np.ndarray]:
    """The champion's error streams per labelled row: the residual (label - score; target -
    prediction for regression) and its absolute value, regression's scaled by the target's spread.

    Threshold-free: when the concept changes, the labels move away from the champion's scores. The
    signed residual catches a change of the positive rate that the 0/1 misclassification rate hardly
    shows when a stale champion over-flags (SEA 0 -> 3: error rate 9% -> 12% for some bootstrap seeds,
    missed by ADWIN in a 2,250-row window, while the residual's mean went -0.18 -> -0.31 for every
    seed); the absolute one catches a concept that turns at an unchanged positive rate (the signed
    mean stays put). ADWIN's bound assumes values of about unit range, hence regression's scaling."""
    y = targets(frame, spec).astype(float)
    r = y - np.asarray(champion.learner.score(frame[champion.columns]), dtype=float)
    if is_regression(spec):
        spread = float(np.std(y))
        r = r / spread if spread > 0 else r
    return [r, np.abs(r)]


def _newest_change(streams: list[np.ndarray], delta: float) -> Change | None:
    found = [c for c in (detect_change(s, delta) for s in streams) if c is not None]
    return max(found, key=lambda c: c.index) if found else None


def since_change(
    settings: Settings,
    spec: StreamSpec,
    champion: Any,
    window: Any,
    residuals: list[np.ndarray] | None = None,
) -> tuple[Any, dict]:
    """(the window fresh candidates use, what was found). The window is ``window`` itself when the
    setting is off, no change is detected, or fewer than ``retrain.change_min_rows`` rows follow it;
    otherwise a copy whose training and validation rows start at the change point (same holdout).
    ``residuals``: the champion's error streams over ``window.labelled``, if already computed."""
    from rtml.models.training.challenger import split_validation

    r = settings.retrain
    if not r.fresh_since_change:
        return window, {"change": "off"}
    rows = pd.concat([window.train, window.validation], ignore_index=True)
    if len(rows) < 2:
        return window, {"change": "none detected"}
    if residuals is None:
        residuals = champion_residuals(spec, champion, rows)
    found = _newest_change([e[: len(rows)] for e in residuals], r.change_delta)
    if found is None:
        return window, {"change": "none detected"}
    kept = rows.iloc[found.index :]
    since_ms = int(kept[EVENT_MS].min())
    info = _found(rows, found)
    if len(kept) < r.change_min_rows:
        info["change"] = f"detected, but {len(kept)} rows after it < retrain.change_min_rows"
        return window, info
    train, validation = split_validation(kept, spec, settings)
    short = _too_few_positives(settings, spec, train, validation)
    if short:
        info["change"] = f"detected, but {short}"
        return window, info
    return _with_splits(spec, window.info, train, validation, window.holdout, since_change_ms=since_ms), info


def _with_splits(
    spec: StreamSpec,
    info: dict[str, Any],
    train: pd.DataFrame,
    validation: pd.DataFrame,
    holdout: pd.DataFrame,
    **extra: Any,
) -> Any:
    """A window of these splits; its info is ``info``, the training and validation splits'
    descriptions and ``extra``."""
    from rtml.models.training.challenger import Window, describe

    splits = {**describe(train, spec, "train"), **describe(validation, spec, "validation")}
    return Window(
        train.reset_index(drop=True), holdout, {**info, **splits, **extra}, validation.reset_index(drop=True)
    )


def describe_windows(change: dict, judged: Any, recent: Any) -> str:
    """One log line on what a found change did to the windows of a retrain ('' when nothing).

    >>> from types import SimpleNamespace as W
    >>> change = {"change": "detected", "change_since_ms": 1_700_000_000_000, "change_rows_after": 750}
    >>> line = describe_windows(change, W(holdout=[0] * 250), W(train=[0] * 600))
    >>> line.startswith("a change at 2023-11-14 22:13:20 UTC (event time): fresh candidates train on 600")
    True
    >>> moved = {**change, "holdout": "after the change"}
    >>> moved = describe_windows(moved, W(holdout=[0] * 250), W(train=[0] * 600))
    >>> "the holdout moves to the newest 250 rows after it" in moved
    True
    """
    if change.get("change") != "detected" or "change_since_ms" not in change:
        return ""
    at = pd.Timestamp(change["change_since_ms"], unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M:%S UTC")
    n_after = change["change_rows_after"]
    rows = f"fresh candidates train on {len(recent.train)} of the {n_after} rows after it"
    if change.get("holdout") == "after the change":
        rows = f"the holdout moves to the newest {len(judged.holdout)} rows after it, {rows} before those"
    return f"a change at {at} (event time): {rows}"


def _found(rows: pd.DataFrame, found: Change) -> dict[str, Any]:
    """What ``change_point`` reports of a change found in ``rows`` (time-ordered)."""
    return {
        "change": "detected",
        "change_since_ms": int(rows[EVENT_MS].iloc[found.index]),
        "change_detected_ms": int(rows[EVENT_MS].iloc[found.detected_at]),
        "change_rows_after": int(len(rows) - found.index),
        "change_rows_before": int(found.index),
    }


def _too_few_positives(settings: Settings, spec: StreamSpec, train: pd.DataFrame, validation: Any) -> str:
    """Why the rows after a change are too few to learn a classifier from ('' when they suffice):
    fewer than ``promotion.min_positives`` positives (or negatives) to train on, or a validation
    split without a positive to set the threshold on (rare positives, e.g. fraud, after a change)."""
    if is_regression(spec):
        return ""
    y, need = targets(train, spec), settings.promotion.min_positives
    pos = int(np.sum(y))
    if pos < need or len(y) - pos < need:
        return f"{pos} positives and {len(y) - pos} negatives after it < promotion.min_positives ({need})"
    if len(validation) and not int(np.sum(targets(validation, spec))):
        return "no positive in the validation rows after it"
    return ""


def resplit_after_change(
    settings: Settings,
    spec: StreamSpec,
    champion: Any,
    window: Any,
    residuals: list[np.ndarray] | None = None,
) -> tuple[Any, Any, dict] | None:
    """(window judged and continued on, fresh candidates' window, what was found) when a change in
    the champion's residuals is too recent for :func:`since_change` -- fewer than
    ``retrain.change_min_rows`` training and validation rows follow it.

    The newest change over the *whole* window (holdout included) sets only the size of the new
    holdout: the newest ``promotion.holdout_fraction`` of the rows after it. A change must then be
    detected again on the rows before that holdout, with at least ``change_min_rows`` of them after
    it (ADWIN can fire there only where it fired on the whole window: the same change or an older
    one): fresh candidates train on those, ``continue`` candidates on every row before the holdout,
    and the judged rows do not declare a change (they only size the holdout). None (the window as selected
    stands) when there is no such change or its rows are too few to train, set a threshold or judge
    (``promotion.min_holdout``, ``promotion.min_positives``), or when the holdout would reach rows
    older than the window's new ones (``retrain.mode: full``). ``residuals``: the champion's error
    streams over ``window.labelled``, if already computed.
    """
    from rtml.models.training.challenger import describe, split_validation

    r, p = settings.retrain, settings.promotion
    if not r.fresh_since_change:
        return None
    rows = window.labelled  # train, validation, holdout: in event-time order
    n_fit = len(window.train) + len(window.validation)
    if residuals is None:
        residuals = champion_residuals(spec, champion, rows)
    first = _newest_change(residuals, r.change_delta)
    if first is None or n_fit - first.index >= r.change_min_rows:  # none, or since_change's case
        return None
    n_hold = int((len(rows) - first.index) * p.holdout_fraction)
    if n_hold < p.min_holdout:
        return None
    holdout = rows.iloc[len(rows) - n_hold :].reset_index(drop=True)
    if "start_ms" in window.info and int(holdout[EVENT_MS].min()) <= window.info["start_ms"]:
        return None
    # rows tied with the holdout's first event time stay out of training (as in select_window): a
    # watermark at that time would skip the holdout's rows in the next window
    fit = rows[rows[EVENT_MS] < holdout[EVENT_MS].min()]
    found = _newest_change([e[: len(fit)] for e in residuals], r.change_delta)  # without the judged rows
    if found is None or len(fit) - found.index < r.change_min_rows:
        return None
    after = fit.iloc[found.index :]
    fresh_train, fresh_val = split_validation(after, spec, settings)
    if _too_few_positives(settings, spec, fresh_train, fresh_val):
        return None
    if not is_regression(spec):
        pos = int(np.sum(targets(holdout, spec)))
        if min(pos, n_hold - pos) < p.min_positives:
            return None
    train, validation = split_validation(fit, spec, settings)
    since_ms = int(after[EVENT_MS].min())
    info = _found(fit, found) | {
        "holdout": "after the change",
        "holdout_rows": n_hold,
        "holdout_sized_by_ms": int(rows[EVENT_MS].iloc[first.index]),  # the whole window's change
    }
    kept = {k: v for k, v in window.info.items() if not k.startswith(("train_", "validation_", "holdout_"))}
    kept |= describe(holdout, spec, "holdout")
    judged = _with_splits(spec, kept, train, validation, holdout, holdout_since_change_ms=since_ms)
    recent = _with_splits(spec, kept, fresh_train, fresh_val, holdout, since_change_ms=since_ms)
    return judged, recent, info


def candidate_windows(
    settings: Settings, spec: StreamSpec, champion: Any, window: Any, fresh: bool
) -> tuple[Any, Any, dict]:
    """(the window every candidate is judged on and ``continue`` trains on, the window ``fresh``
    candidates train on, what was found about a change): :func:`since_change`, or, for a change too
    recent to train after, :func:`resplit_after_change`. Without a fresh candidate, the window twice."""
    if not fresh:
        return window, window, {"change": "no fresh candidate"}
    # the champion scored once: since_change reads the training and validation rows' part
    rows = window.labelled
    on = settings.retrain.fresh_since_change and len(rows) >= 2
    residuals = champion_residuals(spec, champion, rows) if on else None
    recent, change = since_change(settings, spec, champion, window, residuals)
    if recent is window:
        resplit = resplit_after_change(settings, spec, champion, window, residuals)
        if resplit is not None:
            return resplit
    return window, recent, change
