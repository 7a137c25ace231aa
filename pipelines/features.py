"""Model features from validated events, vectorised with pandas.

One implementation serves training (a whole history frame) and streaming (each micro-batch plus
the per-entity history kept in Spark state), so training and serving compute the same numbers.

Inputs are frames with the spec's event fields and ``_event_ms`` (event time, epoch ms).

>>> from infra.spec import load_spec
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

from infra.spec import StreamSpec, parse_duration_seconds

EVENT_MS = "_event_ms"


def add_time_features(frame: pd.DataFrame, spec: StreamSpec) -> pd.DataFrame:
    ts = pd.to_datetime(frame[EVENT_MS], unit="ms", utc=True)
    for t in spec.time_features:
        frame[f"event_{t}"] = (ts.dt.hour if t == "hour" else ts.dt.dayofweek).astype("float64")
    return frame


def add_entity_aggregates(
    frame: pd.DataFrame, spec: StreamSpec, history: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trailing per-entity count / sum windows including the event itself.

    ``history`` holds earlier events (entity, _event_ms, sum column) of the same entities; the
    returned second frame is the history to keep: events inside the longest window of the newest
    event time seen.
    """
    agg = spec.aggregates
    key = spec.entity_key
    if agg is None:
        return frame, pd.DataFrame(columns=[key, EVENT_MS])
    cols = [key, EVENT_MS] + ([agg.sum_of] if agg.sum_of else [])
    cur = frame[cols].copy()
    cur["_row"] = np.arange(len(frame))
    hist = history[cols].copy() if history is not None and len(history) else cur.iloc[:0].copy()
    hist["_row"] = -1
    both = pd.concat([hist, cur], ignore_index=True) if len(hist) else cur.reset_index(drop=True)
    both = both.sort_values([key, EVENT_MS, "_row"], kind="stable").reset_index(drop=True)
    ts = pd.to_datetime(both[EVENT_MS], unit="ms")
    indexed = both.assign(_one=1.0).set_index(ts)
    grouped = indexed.groupby(key, sort=False)
    for w in agg.windows:
        seconds = parse_duration_seconds(w)
        window = f"{seconds}s"
        both[f"{key}_count_{w}"] = grouped["_one"].rolling(window).sum().to_numpy()
        if agg.sum_of:
            both[f"{key}_{agg.sum_of}_sum_{w}"] = grouped[agg.sum_of].rolling(window).sum().to_numpy()
    mine = both[both["_row"] >= 0].sort_values("_row")
    for name in spec.aggregate_names:
        frame[name] = mine[name].to_numpy(dtype="float64")
    horizon = max(parse_duration_seconds(w) for w in agg.windows) * 1000
    newest = both[EVENT_MS].max() if len(both) else 0
    keep = both.loc[both[EVENT_MS] > newest - horizon, cols]
    return frame, keep.reset_index(drop=True)


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
    return (pd.to_datetime(values, utc=True, format="ISO8601").astype("int64") // 1_000_000).astype("int64")


def featurise_history(events: pd.DataFrame, spec: StreamSpec) -> pd.DataFrame:
    """Batch featurisation of a whole history frame (training, bootstrap, backfills)."""
    frame = events.copy()
    if EVENT_MS not in frame:
        frame[EVENT_MS] = event_ms_from_field(frame[spec.event_time], spec)
    frame = add_time_features(frame, spec)
    frame, _ = add_entity_aggregates(frame, spec)
    return frame
