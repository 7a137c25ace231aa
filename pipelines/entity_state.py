"""Per-entity rolling aggregates kept in Spark state (applyInPandasWithState).

Events are grouped by a hash bucket of the entity key, not by the entity itself, so each state
call handles a whole pandas frame (many entities at once, vectorised) and the number of Python
calls per micro-batch is the number of buckets. The state of a bucket is the recent history of
its entities (within the longest window), stored as Arrow IPC bytes: binary state avoids the
array-typed state schema bug of Spark 4.3.0. Invalid events (``_reason`` set) pass through in
bucket -1 without touching state. The stage's output is what ``finish`` makes of the featurised
frame (the scorer: see :mod:`rtml.pipelines.scorer`). State is versioned with the checkpoint, so a replayed
micro-batch recomputes exactly the same aggregates.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd

from rtml.features.featurise import featurise
from rtml.infra.config.spec import StreamSpec

STATE_SCHEMA = "history binary"


def pseudonymise(values: pd.Series, key: str) -> pd.Series:
    """Keyed hash (SipHash-2-4 keyed by the secret) of entity ids, vectorised.

    >>> pseudonymise(pd.Series(["card_1", "card_1", "card_2"]), "secret").nunique()
    2
    """
    hash_key = hashlib.sha256(key.encode()).hexdigest()[:16]
    hashed = pd.util.hash_pandas_object(values.astype("object"), index=False, hash_key=hash_key)
    return "p_" + hashed.astype("uint64").astype(str)


def _to_bytes(frame: pd.DataFrame) -> bytes:
    import pyarrow as pa

    sink = io.BytesIO()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def _from_bytes(blob: bytes) -> pd.DataFrame:
    import pyarrow as pa

    return pa.ipc.open_stream(io.BytesIO(blob)).read_all().to_pandas()


def make_state_fn(
    spec: StreamSpec, pseudonym_key: str | None, finish: Callable[[pd.DataFrame], pd.DataFrame]
) -> Callable[[Any, Iterator[pd.DataFrame], Any], Iterator[pd.DataFrame]]:
    """The function for ``groupBy('_bucket').applyInPandasWithState``.

    ``finish`` turns the featurised frame into the stage's output (the scorer), so features and
    scores take one Python hop per micro-batch.
    """
    extra = [*(f"event_{t}" for t in spec.time_features), *spec.aggregate_names]

    def fn(key: tuple, frames: Iterator[pd.DataFrame], state: Any) -> Iterator[pd.DataFrame]:
        bucket = key[0]
        if bucket < 0:  # invalid events: pass through untouched
            for frame in frames:
                for c in extra:
                    frame[c] = float("nan")
                yield finish(frame)
            return
        history = _from_bytes(state.get[0]) if state.exists else None
        for frame in frames:
            if pseudonym_key:
                frame[spec.entity_key] = pseudonymise(frame[spec.entity_key], pseudonym_key)
            frame, history = featurise(frame, spec, history)
            yield finish(frame)
        if history is not None:
            state.update((_to_bytes(history),))

    return fn
