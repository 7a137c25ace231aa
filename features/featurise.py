"""Model features from validated events, vectorised with pandas.

One implementation serves training (a whole history frame) and streaming (each micro-batch plus
the per-entity history kept in Spark state), so training and serving compute the same numbers.

Inputs are frames with the spec's event fields and ``_event_ms`` (event time, epoch ms).

>>> from rtml.infra.config.spec import load_spec
>>> spec = load_spec()
>>> ev = pd.DataFrame({"card_id": ["a", "a", "b"], "amount": [10.0, 5.0, 1.0],
...                    "_event_ms": [0, 60_000, 0]})
>>> out, _ = add_entity_aggregates(ev, spec)
>>> out["card_id_count_10m"].tolist(), out["card_id_amount_sum_10m"].tolist()
([1.0, 2.0, 1.0], [10.0, 15.0, 1.0])
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rtml.infra.config.spec import StreamSpec, parse_duration_seconds

EVENT_MS = "_event_ms"


def add_time_features(frame: pd.DataFrame, spec: StreamSpec) -> pd.DataFrame:
    ts = pd.to_datetime(frame[EVENT_MS], unit="ms", utc=True)
    for t in spec.time_features:
        frame[f"event_{t}"] = (ts.dt.hour if t == "hour" else ts.dt.dayofweek).astype("float64")
    return frame


def retained(rows: pd.DataFrame, key: str, keep_ms: int) -> pd.DataFrame:
    """The rows each entity still needs: newer than *that entity's* newest time minus ``keep_ms``.

    Per entity, not against the newest time of the whole frame: in a backlog one call can hold
    hours of event time, and an entity whose events are older than another's newest still needs
    its own trailing window (a global trim cut it short).

    >>> rows = pd.DataFrame({"k": ["a", "a", "b", "b"], "_event_ms": [0, 50, 100, 900]})
    >>> retained(rows, "k", 100)["_event_ms"].tolist()
    [0, 50, 900]
    """
    codes, uniques = pd.factorize(rows[key], use_na_sentinel=False)
    keep = _kept_rows(codes, rows[EVENT_MS].to_numpy(dtype=np.int64), len(uniques), keep_ms)
    return rows[keep].reset_index(drop=True)


def longest_window_ms(spec: StreamSpec) -> int:
    agg = spec.aggregates
    return max(parse_duration_seconds(w) for w in agg.windows) * 1000 if agg else 0


def add_entity_aggregates(
    frame: pd.DataFrame,
    spec: StreamSpec,
    history: pd.DataFrame | None = None,
    carry: tuple[str, ...] = (),
    keep_ms: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trailing per-entity count / sum windows (t - w, t], including the event itself.

    ``history`` holds earlier events (entity, _event_ms, sum column, and the ``carry`` columns) of
    the same entities; the returned second frame is the history to keep: per entity, its events
    inside max(longest window, ``keep_ms``) of that entity's newest event time (:func:`retained`).
    Vectorised: the entity keys are hashed once (history and batch together), then one sort,
    ``searchsorted`` for window starts and cumulative sums for window totals -- no per-entity or
    per-event Python.
    """
    agg = spec.aggregates
    key = spec.entity_key
    if agg is None:
        return frame, pd.DataFrame(columns=[key, EVENT_MS, *carry])
    cols = [key, EVENT_MS] + ([agg.sum_of] if agg.sum_of else [])
    kept = cols + [c for c in carry if c not in cols]
    if history is None or not len(history):
        hist_all = frame.iloc[:0][kept]
    else:  # the state's history has exactly these columns: no copy of it
        hist_all = history if list(history.columns) == kept else history[kept]
    n_all = len(hist_all)
    # one hash pass over every key: which history rows belong to the batch's entities, the sort
    # key of the windows, and each entity's newest time for the trim all come from these codes
    codes_all, uniques = pd.factorize(
        np.concatenate([hist_all[key].to_numpy(dtype=object), frame[key].to_numpy(dtype=object)]),
        use_na_sentinel=False,
    )
    t_all = np.concatenate(
        [hist_all[EVENT_MS].to_numpy(dtype=np.int64), frame[EVENT_MS].to_numpy(dtype=np.int64)]
    )
    in_batch = np.zeros(len(uniques), dtype=bool)
    in_batch[codes_all[n_all:]] = True
    touched = np.flatnonzero(in_batch[codes_all[:n_all]])
    n_hist = len(touched)
    pick = np.concatenate([touched, np.arange(n_all, len(t_all))])
    t = t_all[pick]
    row = np.arange(len(t))  # history first, then the batch in its order: ties keep that order
    code = pd.factorize(codes_all[pick])[0].astype(np.int64)  # dense codes of the batch's entities
    order = np.lexsort((row, t, code))
    t0 = t.min() if len(t) else 0
    max_w = longest_window_ms(spec)
    span = (t.max() - t0 if len(t) else 0) + max_w + 1
    k = code[order] * span + (t[order] - t0)
    group_start = np.searchsorted(k, code[order] * span, side="left")
    idx = np.arange(len(k))
    mine = order >= n_hist  # rows of this batch, in sorted order
    dest = order[mine] - n_hist  # their position in `frame`
    if agg.sum_of:
        amounts = np.concatenate(
            [
                hist_all[agg.sum_of].to_numpy(dtype=float)[touched],
                frame[agg.sum_of].to_numpy(dtype=float),
            ]
        )
        csum = np.concatenate([[0.0], np.cumsum(np.nan_to_num(amounts[order]))])
    for w in agg.windows:
        w_ms = parse_duration_seconds(w) * 1000
        start = np.maximum(np.searchsorted(k, k - w_ms, side="right"), group_start)
        count = np.empty(len(frame))
        count[dest] = (idx - start + 1)[mine]
        frame[f"{key}_count_{w}"] = count
        if agg.sum_of:
            total = np.empty(len(frame))
            total[dest] = (csum[idx + 1] - csum[start])[mine]
            frame[f"{key}_{agg.sum_of}_sum_{w}"] = total
    keep = _kept_rows(codes_all, t_all, len(uniques), max(max_w, keep_ms))
    # filtered before the concatenation: one copy of the history, not three
    parts = [hist_all[keep[:n_all]], frame[kept][keep[n_all:]]]
    return frame, pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)


def _kept_rows(codes: np.ndarray, t: np.ndarray, n_codes: int, keep_ms: int) -> np.ndarray:
    """Rows newer than their entity's newest time (per entity code) minus ``keep_ms`` (:func:`retained`)."""
    if not len(t):
        return np.zeros(0, dtype=bool)
    newest = np.full(n_codes, np.iinfo(np.int64).min)
    np.maximum.at(newest, codes, t)
    return t > newest[codes] - keep_ms


def model_frame(frame: pd.DataFrame, spec: StreamSpec) -> pd.DataFrame:
    """Exactly the columns a model consumes, in a fixed order and dtype."""
    out = pd.DataFrame(index=frame.index)
    for name in spec.model_numeric_inputs:
        out[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    for name in spec.categorical_names:
        out[name] = frame[name].astype("object")
    return out


def event_ms_from_field(values: pd.Series, spec: StreamSpec) -> pd.Series:
    if spec.event_time_format == "epoch_ms":
        return values.astype("int64")
    if spec.event_time_format == "epoch_s":
        return (values.astype("float64") * 1000).round().astype("int64")
    return (pd.to_datetime(values, utc=True, format="ISO8601").astype("int64") // 1_000_000).astype("int64")


def featurise(
    frame: pd.DataFrame,
    spec: StreamSpec,
    history: pd.DataFrame | None = None,
    carry: tuple[str, ...] = (),
    keep_ms: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Time features and per-entity windows; the one featurisation of both training and serving.

    Returns the featurised frame and the entity history to carry into the next call (with the
    ``carry`` columns, kept for max(longest window, ``keep_ms``): see :func:`add_entity_aggregates`).
    """
    return add_entity_aggregates(add_time_features(frame, spec), spec, history, carry, keep_ms)


def featurise_history(events: pd.DataFrame, spec: StreamSpec) -> pd.DataFrame:
    """Batch featurisation of a whole history frame (training, bootstrap, backfills)."""
    frame = events.copy()
    if EVENT_MS not in frame:
        frame[EVENT_MS] = event_ms_from_field(frame[spec.event_time], spec)
    return featurise(frame, spec)[0]
