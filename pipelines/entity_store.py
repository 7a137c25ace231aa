"""Per-entity state keyed by entity, outside Spark's state store: a micro-batch reads and writes only
the entities it contains (``scoring.state_store: sqlite``).

Spark's state API hands Python a group's whole state (``applyInPandasWithState``) or one key per
call (``transformWithStateInPandas``, ≈350 µs per entity here), so per-entity state there costs
either O(state) or a socket round trip per entity per micro-batch. This store is one SQLite database
per state bucket under the query's checkpoint; a row per entity holds that entity's kept history
(event time, sum column, 64-bit hash of the event id) as packed fixed-width records, so a bucket's
touched entities are read with one query and decoded with one ``numpy.frombuffer``.

**Exactly once across replays**: every row carries the micro-batch id that wrote it and the value it
replaced. Spark re-runs only the last, uncommitted micro-batch (same offsets, same events): when a
row's version is the running batch, its previous value is the state before that batch, so a replay
(or a second evaluation of the same batch) computes the same aggregates. A row newer than the
running batch means the store is ahead of the checkpoint (a checkpoint restored or rewound without
its store): that is an error, never a silent mix. Each bucket's writes are one SQLite transaction
(WAL, ``synchronous=FULL``), so a killed task leaves the bucket at the last committed batch.

One writer per bucket file: a bucket is one group of the micro-batch's ``applyInPandas``, processed
by one task at a time; SQLite's file lock serialises a stray second attempt, and a write from an
older micro-batch than a row's is refused (:class:`StoreAheadError`), never applied. The files live
on the driver's checkpoint path, so the store is for a local master only (``auto`` picks it there,
:func:`rtml.pipelines.keyed_state.store_mode`); on a cluster the same rows live in PostgreSQL
(:mod:`rtml.pipelines.entity_store_pg`) or the state in Spark's RocksDB store. The record layout
is recorded in the file: switching de-duplication on or off converts the rows once.

"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from rtml.features.featurise import EVENT_MS

ID_HASH = "_id_hash"  # the history's event-id column in this store (uint64, vectorised hash)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    entity BLOB PRIMARY KEY, version INTEGER NOT NULL, last_ms INTEGER NOT NULL, value BLOB NOT NULL,
    prev_version INTEGER, prev_last_ms INTEGER, prev_value BLOB
);
CREATE INDEX IF NOT EXISTS entities_by_last ON entities (last_ms);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# a row written again by the same batch (a replay) keeps the value that batch started from; a write
# from an older batch than the row's (a stray task attempt) changes nothing and is counted
_UPSERT = """
INSERT INTO entities (entity, version, last_ms, value) VALUES (?, ?, ?, ?)
ON CONFLICT (entity) DO UPDATE SET
    prev_version = CASE WHEN version = excluded.version THEN prev_version ELSE version END,
    prev_last_ms = CASE WHEN version = excluded.version THEN prev_last_ms ELSE last_ms END,
    prev_value = CASE WHEN version = excluded.version THEN prev_value ELSE value END,
    version = excluded.version, last_ms = excluded.last_ms, value = excluded.value
WHERE excluded.version >= entities.version
"""
_CHUNK = 30_000  # bound parameters per query (SQLite's limit is 32,766)


class StoreAheadError(RuntimeError):
    """The entity store holds a micro-batch the checkpoint has not reached."""


class StoreMismatchError(RuntimeError):
    """The checkpoint's entity state is in the other store."""


def hash_ids(ids: pd.Series) -> np.ndarray:
    """Event ids as 64-bit hashes (vectorised; missing ids hash to 0, which never counts as seen).

    >>> h = hash_ids(pd.Series(["t1", "t2", "t1", None]))
    >>> bool(h[0] == h[2]), bool(h[0] != h[1]), int(h[3])
    (True, True, 0)
    """
    hashed = pd.util.hash_pandas_object(ids.astype("object"), index=False).to_numpy(dtype=np.uint64)
    return np.where(ids.notna().to_numpy(), hashed, np.uint64(0))


class KeyedStore:
    """What every keyed store shares: the packed record layout of an entity's kept history, how a
    batch's history is encoded into one row per entity, and how read rows are decoded and checked
    against the running micro-batch. Subclasses keep the rows (:class:`EntityStore`: SQLite;
    :class:`rtml.pipelines.entity_store_pg.PgEntityStore`: PostgreSQL)."""

    where = "entity state"  # names the store in errors

    def __init__(self, key: str, sum_of: str | None, with_ids: bool) -> None:
        self.key = key
        fields = [(EVENT_MS, "<i8")]
        if sum_of:
            fields.append((sum_of, "<f8"))
        if with_ids:
            fields.append((ID_HASH, "<u8"))
        self.record = np.dtype(fields)
        self.columns = [key, *self.record.names]

    def _wanted(self, entities: pd.Series) -> list[bytes]:
        """The distinct keys of ``entities`` as UTF-8 bytes (stores compare them as blobs: text
        comparisons stop at a NUL character)."""
        return [k.encode() for k in pd.unique(entities.astype(str).to_numpy(dtype=object))]

    def _decode(self, rows: list[tuple], batch_id: int) -> pd.DataFrame:
        """Rows ``(entity, version, value, prev_value)`` as the history before ``batch_id``."""
        ahead = [r for r in rows if r[1] > batch_id]  # writes are monotonic: prev_version < version
        if ahead:
            raise StoreAheadError(
                f"{self.where} holds micro-batch {max(r[1] for r in ahead)} but the "
                f"checkpoint is at {batch_id}: the checkpoint was rewound or restored without its "
                "state; restore both or start both afresh"
            )
        names, blobs = [], []
        for entity, version, value, prev_value in rows:
            blob = prev_value if version == batch_id else value  # a replay starts where it started
            if blob:
                names.append(bytes(entity).decode())
                blobs.append(bytes(blob))
        return self._frame(names, blobs)

    def _encode(self, history: pd.DataFrame, batch_id: int) -> list[tuple[bytes, int, int, bytes]]:
        """One ``(entity, batch_id, newest event ms, packed records)`` row per entity of ``history``."""
        codes, uniques = pd.factorize(history[self.key], use_na_sentinel=False)
        order = np.argsort(codes, kind="stable")  # an entity's rows stay in their order
        records = np.empty(len(history), dtype=self.record)
        for name in self.record.names:
            records[name] = history[name].to_numpy(dtype=self.record[name])[order]
        counts = np.bincount(codes, minlength=len(uniques))
        ends = np.cumsum(counts) * self.record.itemsize
        starts = ends - counts * self.record.itemsize
        last = np.full(len(uniques), np.iinfo(np.int64).min)
        np.maximum.at(last, codes, history[EVENT_MS].to_numpy(dtype=np.int64))
        buf = records.tobytes()
        return [
            (str(u).encode(), batch_id, int(t), buf[s:e])
            for u, t, s, e in zip(uniques, last.tolist(), starts.tolist(), ends.tolist(), strict=True)
        ]

    def _refused(self, refused: int, batch_id: int) -> StoreAheadError:
        return StoreAheadError(
            f"{self.where}: {refused} entities were written by a later micro-batch than {batch_id}; "
            "this write is not applied"
        )

    def _old_layout(self, layout: str) -> np.dtype:
        """The record layout recorded as ``layout``; an error when it has other columns than
        this store's (beyond the event-id hash, which de-duplication adds or drops)."""
        old = np.dtype([tuple(f) for f in json.loads(layout)])
        if set(old.names) - {ID_HASH} != set(self.record.names) - {ID_HASH}:
            raise StoreMismatchError(
                f"{self.where} was written for the columns {list(old.names)}, "
                f"this spec needs {list(self.record.names)}: start a new checkpoint"
            )
        return old

    def _convert(self, blob: bytes | None, old: np.dtype) -> bytes | None:
        if blob is None:
            return None
        records = np.frombuffer(blob, dtype=old)
        new = np.zeros(len(records), dtype=self.record)  # ids not kept before: hash 0, never seen
        for name in self.record.names:
            if name in old.names:
                new[name] = records[name]
        return new.tobytes()

    def _frame(self, names: list[str], blobs: list[bytes]) -> pd.DataFrame:
        records = np.frombuffer(b"".join(blobs), dtype=self.record)
        counts = np.fromiter((len(b) for b in blobs), dtype=np.int64, count=len(blobs))
        frame = pd.DataFrame({name: records[name] for name in self.record.names})
        frame.insert(0, self.key, np.repeat(np.asarray(names, dtype=object), counts // self.record.itemsize))
        return frame


class EntityStore(KeyedStore):
    """The keyed state of one bucket in SQLite: ``read`` some entities' history, ``write`` theirs."""

    def __init__(self, root: str | Path, bucket: int, key: str, sum_of: str | None, with_ids: bool) -> None:
        super().__init__(key, sum_of, with_ids)
        self.path = Path(root) / f"bucket-{bucket:04d}.sqlite"
        self.where = f"entity state {self.path}"
        self._con: sqlite3.Connection | None = None

    @property
    def con(self) -> sqlite3.Connection:
        if self._con is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=300, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.executescript(_SCHEMA)
            self._con = con
            self._check_layout()
        return self._con

    def _check_layout(self) -> None:
        """Rows written with another record layout (de-duplication switched on or off since) are
        converted once, in one transaction; an unknown layout (another sum column) is an error."""
        con, layout = self.con, json.dumps(self.record.descr)
        row = con.execute("SELECT value FROM meta WHERE name = 'layout'").fetchone()
        if row is not None and row[0] == layout:
            return
        con.execute("BEGIN IMMEDIATE")
        try:
            row = con.execute("SELECT value FROM meta WHERE name = 'layout'").fetchone()
            if row is not None and row[0] != layout:
                old = self._old_layout(row[0])
                rows = con.execute("SELECT entity, value, prev_value FROM entities").fetchall()
                con.executemany(
                    "UPDATE entities SET value = ?, prev_value = ? WHERE entity = ?",
                    [(self._convert(v, old), self._convert(p, old), e) for e, v, p in rows],
                )
            con.execute("INSERT OR REPLACE INTO meta VALUES ('layout', ?)", (layout,))
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def read(self, entities: pd.Series, batch_id: int) -> pd.DataFrame:
        """The kept history of ``entities`` as it was before micro-batch ``batch_id`` (one query)."""
        wanted, rows = self._wanted(entities), []
        for i in range(0, len(wanted), _CHUNK):  # a list of keys, not JSON: keys may hold any character
            part = wanted[i : i + _CHUNK]
            rows += self.con.execute(
                "SELECT entity, version, value, prev_value FROM entities "
                f"WHERE entity IN ({','.join('?' * len(part))})",
                part,
            ).fetchall()
        return self._decode(rows, batch_id)

    def write(self, history: pd.DataFrame, batch_id: int) -> None:
        """Replace the kept history of every entity in ``history`` (one transaction)."""
        if not len(history):
            return
        params = self._encode(history, batch_id)
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            changed = con.executemany(_UPSERT, params).rowcount
            if changed != len(params):
                raise self._refused(len(params) - changed, batch_id)
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def evict_idle(self, idle_ms: int, batch_id: int) -> int:
        """Delete the entities whose newest event is ``idle_ms`` or more older than the bucket's
        newest (index range, O(evicted)); rows this batch wrote stay until a later one."""
        if not idle_ms:
            return 0
        newest = self.con.execute("SELECT max(last_ms) FROM entities").fetchone()[0]
        if newest is None:
            return 0
        cur = self.con.execute(
            "DELETE FROM entities WHERE last_ms <= ? AND version < ?", (newest - idle_ms, batch_id)
        )
        return cur.rowcount
