"""The kept history of one state bucket, split so a micro-batch converts only what it touches.

The state of a bucket is an Arrow IPC stream of rows (entity, event time, sum column, event id). A
micro-batch touches a few of the bucket's entities: their rows are moved into pandas (where
:func:`rtml.features.featurise.featurise` and the de-duplication work on them); the rows of every
other entity stay Arrow buffers, are never converted to Python objects, and are written back as
they are. Their aggregates cannot change: an entity's rows are trimmed against its own newest event,
which only its own events move. Idle-entity eviction still looks at every entity (vectorised in
Arrow, and skipped when no row is old enough for any entity to be idle).
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

from rtml.features.featurise import EVENT_MS

# Arrow IPC buffer compression of the state: Spark moves each bucket's whole state between RocksDB and
# the Python worker every micro-batch, and that costs far more per byte than compressing. Measured at
# 500k cards (benchmarks/state_scale.py), 20k-event batches: none 5.73 s (126 MB written per batch),
# lz4 4.16 s (63 MB), zstd 3.47 s (39 MB). State written without compression (or with another codec)
# reads as before: the codec is recorded in the stream.
COMPRESSION = "zstd"


class BucketHistory:
    """``rest``: Arrow rows of the entities not touched yet; ``touched``: pandas rows of the others."""

    def __init__(self, blob: bytes | None, key: str, carry: tuple[str, ...] = ()) -> None:
        import pyarrow as pa

        self.key = key
        self.rest: Any = pa.ipc.open_stream(io.BytesIO(blob)).read_all() if blob is not None else None
        for name in carry:  # state written before de-duplication: no ids yet
            if self.rest is not None and name not in self.rest.column_names:
                self.rest = self.rest.append_column(name, pa.nulls(self.rest.num_rows, pa.string()))
        if self.rest is not None:
            self.rest = _typed(self.rest)
        self.touched: pd.DataFrame | None = None

    def take(self, keys: pd.Series) -> pd.DataFrame | None:
        """The history of every entity touched so far, these ``keys`` included (pandas)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.rest is not None and self.rest.num_rows:
            wanted = pa.array(
                pd.unique(keys.to_numpy(dtype=object)), type=self.rest.schema.field(self.key).type
            )
            mask = pc.is_in(self.rest.column(self.key), value_set=wanted)
            if pc.any(mask).as_py():
                # no de-duplication of equal strings: it would hash every string converted
                moved = self.rest.filter(mask).to_pandas(deduplicate_objects=False)
                self.rest = self.rest.filter(pc.invert(mask))
                parts = [p for p in (self.touched, moved) if p is not None and len(p)]
                self.touched = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        if self.touched is None and self.rest is not None:
            self.touched = self.rest.slice(0, 0).to_pandas()
        return self.touched

    def evict_idle(self, idle_ms: int) -> None:
        """Drop the entities whose newest event is ``idle_ms`` or more older than the newest of all."""
        import pyarrow.compute as pc

        if not idle_ms:
            return
        rest_t = None
        if self.rest is not None and self.rest.num_rows:
            rest_t = pc.min_max(self.rest.column(EVENT_MS))
        has_touched = self.touched is not None and len(self.touched) > 0
        candidates = [rest_t["max"].as_py()] if rest_t is not None else []
        if has_touched:
            candidates.append(int(self.touched[EVENT_MS].max()))
        if not candidates:
            return
        newest = max(candidates)
        bound = newest - idle_ms
        if rest_t is not None and rest_t["min"].as_py() <= bound:  # some entity may be idle
            last = self.rest.group_by(self.key).aggregate([(EVENT_MS, "max")])
            alive = last.filter(pc.greater(last.column(f"{EVENT_MS}_max"), bound)).column(self.key)
            self.rest = self.rest.filter(pc.is_in(self.rest.column(self.key), value_set=alive))
        if has_touched and self.touched[EVENT_MS].min() <= bound:
            t = self.touched
            last_t = t.groupby(self.key, sort=False, dropna=False)[EVENT_MS].transform("max")
            self.touched = t[last_t.to_numpy() > bound].reset_index(drop=True)

    def to_bytes(self) -> bytes:
        """Arrow IPC (compressed buffers) of the untouched rows as they were, then the touched ones."""
        import pyarrow as pa

        tables = [self.rest] if self.rest is not None and self.rest.num_rows else []
        if self.touched is not None and (len(self.touched) or not tables):
            schema = self.rest.schema if self.rest is not None else None
            columns = schema.names if schema is not None else list(self.touched.columns)
            touched = self.touched[columns] if list(self.touched.columns) != columns else self.touched
            tables.append(_typed(pa.Table.from_pandas(touched, schema=schema, preserve_index=False)))
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        sink = io.BytesIO()
        options = pa.ipc.IpcWriteOptions(compression=COMPRESSION)
        with pa.ipc.new_stream(sink, table.schema, options=options) as w:
            w.write_table(table)
        return sink.getvalue()


def _typed(table: Any) -> Any:
    """Columns of only nulls (event ids of old state) as strings, so every chunk's schema matches."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.string()))
    return table
