"""Per-entity rolling aggregates kept in Spark state (applyInPandasWithState).

Events are grouped by a hash bucket of the entity key, not by the entity itself, so each state
call handles a whole pandas frame (many entities at once, vectorised) and the number of Python
calls per micro-batch is the number of buckets. The state of a bucket is the recent history of
its entities (within the longest window), stored as Arrow IPC bytes: binary state avoids the
array-typed state schema bug of Spark 4.3.0. Only the rows of the entities a micro-batch touches are
converted to pandas (:class:`rtml.pipelines.bucket_history.BucketHistory`); the others go back as the
Arrow buffers they were, but the bucket's whole state is still read and written by Spark each batch.
Invalid events (``_reason`` set) pass through in
bucket -1 without touching state. Events whose id the bucket already saw (a re-sent event has
the same entity, so the same bucket) within ``scoring.dedup_horizon_seconds`` of event time, or
earlier in the same micro-batch, are
duplicates (:func:`repeated`): they leave with ``_reason`` = ``duplicate_event``, unscored and not
counted in any aggregate (the state keeps the ids for the horizon). The stage's output is what
``finish`` makes of the featurised frame (the scorer: see :mod:`rtml.pipelines.scorer`). State is
versioned with the checkpoint, so a replayed micro-batch recomputes exactly the same aggregates.

The history kept is trimmed per entity (:func:`rtml.features.featurise.retained`): a micro-batch
of a backlog spans hours of event time, and its chunks arrive one Kafka partition after another.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from rtml.features.featurise import EVENT_MS, featurise, longest_window_ms, retained
from rtml.infra.config.spec import StreamSpec
from rtml.pipelines.bucket_history import BucketHistory

STATE_SCHEMA = "history binary"
DUPLICATE = "duplicate_event"


def pseudonymise(values: pd.Series, key: str) -> pd.Series:
    """Keyed hash (SipHash-2-4 keyed by the secret) of entity ids, vectorised.

    >>> pseudonymise(pd.Series(["card_1", "card_1", "card_2"]), "secret").nunique()
    2
    """
    hash_key = hashlib.sha256(key.encode()).hexdigest()[:16]
    hashed = pd.util.hash_pandas_object(values.astype("object"), index=False, hash_key=hash_key)
    return "p_" + hashed.astype("uint64").astype(str)


def repeated(
    frame: pd.DataFrame,
    history: pd.DataFrame | None,
    spec: StreamSpec,
    horizon_ms: int,
    id_col: str | None = None,
) -> np.ndarray:
    """Which events of ``frame`` repeat an event id: seen in ``history`` within the horizon, or
    earlier in ``frame`` itself (the first occurrence is kept). Vectorised (hash joins).

    The horizon is event time per entity: ``history`` rows newer than their entity's newest event
    time minus ``horizon_ms`` (older ids may be kept for the aggregates' window, they do not count).
    Only the history of the entities in ``frame`` is searched (when it has the entity column): the
    ids of the whole bucket were hashed on every chunk, and a re-sent event has the same entity.
    ``id_col`` names the id column of both frames when it is not the event id itself (the keyed
    store keeps 64-bit hashes of the ids); an event without an id is never a duplicate.

    >>> from rtml.infra.config.spec import load_spec
    >>> spec = load_spec()
    >>> seen = pd.DataFrame({"card_id": ["a", "a"], "_event_ms": [0, 90_000], "transaction_id": ["t0", "t1"]})
    >>> new = pd.DataFrame({"transaction_id": ["t0", "t1", "t2", "t2"]})
    >>> repeated(new, seen, spec, horizon_ms=60_000).tolist()
    [False, True, False, True]
    """
    id_col = id_col or spec.event_id
    ids = frame[id_col]
    dup = ids.duplicated(keep="first").to_numpy()
    if horizon_ms and history is not None and len(history) and id_col in history:
        recent = history[[spec.entity_key, EVENT_MS, id_col]]
        if spec.entity_key in frame:  # a re-sent event has the same entity: only theirs can match
            recent = recent[recent[spec.entity_key].isin(frame[spec.entity_key]).to_numpy()]
        if horizon_ms < longest_window_ms(spec):  # else the kept history is the horizon already
            recent = retained(recent, spec.entity_key, horizon_ms)
        dup |= ids.isin(recent[id_col].dropna()).to_numpy()
    return dup & frame[spec.event_id].notna().to_numpy()


def featurise_once(
    frame: pd.DataFrame,
    history: pd.DataFrame | None,
    spec: StreamSpec,
    carry: tuple[str, ...],
    horizon_ms: int,
    id_col: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features of ``frame``'s events against ``history`` with repeated ids left out (they come back
    at the end with ``_reason`` = ``duplicate_event`` and no features); the history to keep."""
    dup = repeated(frame, history, spec, horizon_ms, id_col) if horizon_ms else None
    if dup is None or not dup.any():
        return featurise(frame, spec, history, carry, horizon_ms)
    dups = without_features(frame[dup].copy(), spec)
    dups["_reason"] = DUPLICATE
    frame, history = featurise(frame[~dup].copy(), spec, history, carry, horizon_ms)
    return pd.concat([frame, dups], ignore_index=True), history


def without_features(frame: pd.DataFrame, spec: StreamSpec) -> pd.DataFrame:
    """``frame`` with the columns the state stage adds (time features, aggregates) as NaN: the rows
    it does not featurise (invalid events, duplicates)."""
    for c in (*(f"event_{t}" for t in spec.time_features), *spec.aggregate_names):
        frame[c] = float("nan")
    return frame


def idle_after_ms(spec: StreamSpec, idle_ttl_s: int, horizon_ms: int) -> int:
    """How far behind its bucket's newest event an entity may fall before it is evicted: at least
    the longest window and the de-duplication horizon (0: never)."""
    return max(idle_ttl_s * 1000, longest_window_ms(spec), horizon_ms) if idle_ttl_s else 0


def _to_bytes(frame: pd.DataFrame) -> bytes:
    """A history frame as state bytes (Arrow IPC: what :class:`BucketHistory` reads)."""
    import pyarrow as pa

    sink = io.BytesIO()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def _from_bytes(blob: bytes) -> pd.DataFrame:
    """State bytes as one history frame (inspection and tests; the job converts only what it touches)."""
    import pyarrow as pa

    # no de-duplication of equal strings: it hashes every string of the history (event ids are all
    # distinct), ~10x the cost of the decode itself
    return pa.ipc.open_stream(io.BytesIO(blob)).read_all().to_pandas(deduplicate_objects=False)


def make_state_fn(
    spec: StreamSpec,
    pseudonym_key: str | None,
    finish: Callable[[pd.DataFrame], pd.DataFrame],
    dedup_horizon_s: int = 0,
    idle_ttl_s: int = 0,
) -> Callable[[Any, Iterator[pd.DataFrame], Any], Iterator[pd.DataFrame]]:
    """The function for ``groupBy('_bucket').applyInPandasWithState``.

    ``finish`` turns the featurised frame into the stage's output (the scorer), so features and
    scores take one Python hop per micro-batch. ``dedup_horizon_s`` > 0 drops repeated event ids
    (:func:`repeated`); 0 keeps every event. ``idle_ttl_s`` > 0 evicts an entity whose newest event
    is that much event time (at least the longest window) older than its bucket's newest
    (:meth:`~rtml.pipelines.bucket_history.BucketHistory.evict_idle`; an entity that never comes back
    would otherwise stay in state for ever; with ``idle_ms`` at least the longest window, eviction
    changes no aggregate of an in-order event).
    """
    horizon_ms = dedup_horizon_s * 1000
    carry = (spec.event_id,) if horizon_ms else ()
    idle_ms = idle_after_ms(spec, idle_ttl_s, horizon_ms)

    def fn(key: tuple, frames: Iterator[pd.DataFrame], state: Any) -> Iterator[pd.DataFrame]:
        bucket = key[0]
        if bucket < 0:  # invalid events: pass through untouched
            for frame in frames:
                yield finish(without_features(frame, spec))
            return
        bucket_history = BucketHistory(state.get[0] if state.exists else None, spec.entity_key, carry)
        history = None
        for frame in frames:
            if pseudonym_key:
                frame[spec.entity_key] = pseudonymise(frame[spec.entity_key], pseudonym_key)
            history = bucket_history.take(frame[spec.entity_key])  # the rows of entities touched
            frame, history = featurise_once(frame, history, spec, carry, horizon_ms)
            yield finish(frame)
            bucket_history.touched = history
        bucket_history.evict_idle(idle_ms)
        if bucket_history.rest is not None or bucket_history.touched is not None:
            state.update((bucket_history.to_bytes(),))

    return fn
