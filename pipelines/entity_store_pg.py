"""Per-entity state in PostgreSQL (``scoring.state_store: postgres``): the keyed store every executor
of a cluster reaches, so a micro-batch reads and writes only the entities it contains on any master.

The rows, their meaning and the exactly-once rule are those of the SQLite store
(:mod:`rtml.pipelines.entity_store`): one row per entity holding its kept history as packed records,
the micro-batch that wrote it and the value it replaced, so a re-run of the last micro-batch computes
the same aggregates and a row newer than the running batch is an error. Here the rows of all buckets
of one checkpoint are one table, keyed by ``(bucket, entity)``; the table's name is recorded in the
checkpoint (:func:`rtml.pipelines.keyed_state.pg_target`), so a new checkpoint starts a new table.

The driver creates the table when the checkpoint first names it (:func:`create_table`); after that
a missing table (a new server, its data removed, another ``scoring.state_url``) is an error, never a
silent start from empty state. A bucket's read is one query (``entity = ANY(keys)``); its write is one
transaction: the rows are copied in (binary ``COPY``) and upserted in one statement that refuses a
write from an older micro-batch than a row's. Tasks of one micro-batch write different buckets, so
they never wait on each other; a stray second attempt of a task (speculation, a lost executor) waits
for the first one's transaction (a transaction-level advisory lock per bucket), as SQLite's file lock
serialises them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from rtml.pipelines.entity_store import KeyedStore, StoreMismatchError

META = "rtml_entity_state_meta"  # one row per state table: its record layout
_CREATE_META = f"CREATE TABLE IF NOT EXISTS {META} (name text PRIMARY KEY, layout text NOT NULL)"
LOCK_TIMEOUT = "300s"  # a lock held longer fails the task (SQLite's busy timeout is 300 s too)
# per session: a lock waits at most LOCK_TIMEOUT; a task whose executor vanished mid-transaction
# (a partition, not a death) releases its bucket's lock after as long
SESSION = (f"lock_timeout={LOCK_TIMEOUT}", f"idle_in_transaction_session_timeout={LOCK_TIMEOUT}")


class StateUrlError(RuntimeError):
    """``scoring.state_url`` is not a usable PostgreSQL URL, or its server cannot be reached."""


def connect(url: str) -> Any:
    """A connection to the state store's database (autocommit; locks wait at most LOCK_TIMEOUT).

    Errors never carry the URL's password: libpq quotes parts of a malformed URL in its messages."""
    try:
        import psycopg
    except ImportError:
        raise StateUrlError(
            "scoring.state_store postgres needs psycopg: pip install 'rtml[postgres]'"
        ) from None
    from psycopg.conninfo import conninfo_to_dict

    bad = StateUrlError(
        "scoring.state_url is not a valid URL (postgresql://user:password@host:port/database, "
        "with special characters such as @ / % : in the password percent-encoded)"
    )
    if not url.startswith(("postgresql://", "postgres://")):
        raise StateUrlError("scoring.state_url must be a postgresql:// URL")
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise bad from None
    authority = url.split("://", 1)[1].split("/", 1)[0]
    # an unencoded @ or / in the password moves its rest into the host, port or database name,
    # which libpq quotes in its errors
    if authority.count("@") > 1 or any(c in str(parts.get("dbname", "")) for c in "@/:"):
        raise bad
    if not all(p.isdigit() for p in str(parts.get("port", "0")).split(",")):
        raise bad
    password = str(parts.get("password") or "")
    options = " ".join(
        [str(parts.get("options") or os.environ.get("PGOPTIONS", "")), *(f"-c {o}" for o in SESSION)]
    )
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=30, options=options.strip())
    except psycopg.Error as exc:
        raise redacted(exc, password) from None


def redacted(exc: Exception, password: str) -> StateUrlError:
    """``exc`` as one line naming the state store, the password (if any) masked."""
    text = " ".join(str(exc).split())
    return StateUrlError(
        f"entity state store at scoring.state_url: {text.replace(password, '***') if password else text}"
    )


@dataclass(frozen=True)
class PgTarget:
    """Where a checkpoint's entity state lives in PostgreSQL: the server and the table."""

    url: str = field(repr=False)  # holds the password: never printed
    table: str


def _sql(text: str, table: str) -> Any:
    from psycopg import sql

    return sql.SQL(text).format(t=sql.Identifier(table), i=sql.Identifier(f"{table}_by_last"))


_CREATE = """
CREATE TABLE IF NOT EXISTS {t} (
    bucket integer NOT NULL, entity bytea NOT NULL, version bigint NOT NULL, last_ms bigint NOT NULL,
    value bytea NOT NULL, prev_version bigint, prev_last_ms bigint, prev_value bytea,
    PRIMARY KEY (bucket, entity)
);
CREATE INDEX IF NOT EXISTS {i} ON {t} (bucket, last_ms);
"""
# rows in key order: two attempts of one bucket never lock rows in opposite orders
_UPSERT = """
INSERT INTO {t} AS s (bucket, entity, version, last_ms, value)
SELECT %s, entity, version, last_ms, value FROM rtml_incoming ORDER BY entity
ON CONFLICT (bucket, entity) DO UPDATE SET
    prev_version = CASE WHEN s.version = excluded.version THEN s.prev_version ELSE s.version END,
    prev_last_ms = CASE WHEN s.version = excluded.version THEN s.prev_last_ms ELSE s.last_ms END,
    prev_value = CASE WHEN s.version = excluded.version THEN s.prev_value ELSE s.value END,
    version = excluded.version, last_ms = excluded.last_ms, value = excluded.value
WHERE excluded.version >= s.version
"""


def _has_table(con: Any, table: str) -> bool:
    return con.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None


def create_table(target: PgTarget) -> None:
    """Create the checkpoint's state table (the driver, when the checkpoint first names it)."""
    import psycopg

    try:
        with connect(target.url) as con, con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (META,))
            con.execute(_CREATE_META)
            con.execute(_sql(_CREATE, target.table))
    except psycopg.Error as exc:  # e.g. no CREATE right on the schema
        raise redacted(exc, "") from None


def check_table(target: PgTarget, checkpoint: object) -> None:
    """An error when the checkpoint's state table is not in the database (the driver, at start)."""
    with connect(target.url) as con:
        if not _has_table(con, target.table):
            raise StoreMismatchError(
                f"the checkpoint {checkpoint} keeps its entity state in the PostgreSQL table "
                f"{target.table}, which the database at scoring.state_url does not have (another "
                "server, or its data was removed): restore both or start both afresh"
            )


class PgEntityStore(KeyedStore):
    """The keyed state of one bucket in PostgreSQL: ``read`` some entities' history, ``write`` theirs."""

    def __init__(self, target: PgTarget, bucket: int, key: str, sum_of: str | None, with_ids: bool) -> None:
        super().__init__(key, sum_of, with_ids)
        self.target, self.bucket, self.table = target, bucket, target.table
        self.where = f"entity state (PostgreSQL table {target.table}, bucket {bucket})"
        self._con: Any = None

    @property
    def con(self) -> Any:
        if self._con is None:
            self._con = connect(self.target.url)
            self._check_layout()
        return self._con

    def _check_layout(self) -> None:
        """Rows written with another record layout (de-duplication switched on or off since) are
        converted once; another sum column is an error; a missing table is an error."""
        layout = json.dumps(self.record.descr)
        if self._layout() == layout:
            return
        with self._con.transaction():  # one task of the first micro-batch records or converts
            self._con.execute("SET LOCAL lock_timeout = 0")  # a conversion may take long: wait for it
            self._con.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (META,))
            self._con.execute(_CREATE_META)
            if not _has_table(self._con, self.table):
                raise StoreMismatchError(
                    f"{self.where}: the table is not in the database at scoring.state_url (another "
                    "server, or its data was removed): restore both or start both afresh"
                )
            before = self._layout()
            if before is not None and before != layout:
                old = self._old_layout(before)
                rows = self._con.execute(
                    _sql("SELECT bucket, entity, value, prev_value FROM {t}", self.table)
                )
                with self._con.cursor() as cur:
                    cur.executemany(
                        _sql(
                            "UPDATE {t} SET value = %s, prev_value = %s WHERE bucket = %s AND entity = %s",
                            self.table,
                        ),
                        [
                            (self._convert(v, old), self._convert(p, old), b, e)
                            for b, e, v, p in rows.fetchall()
                        ],
                    )
            self._con.execute(
                f"INSERT INTO {META} VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET layout = excluded.layout",
                (self.table, layout),
            )

    def _layout(self) -> str | None:
        """The layout recorded for this table; None when the table or the record is missing."""
        meta, table = self._con.execute(
            "SELECT to_regclass(%s), to_regclass(%s)", (META, self.table)
        ).fetchone()
        if meta is None or table is None:
            return None
        row = self._con.execute(f"SELECT layout FROM {META} WHERE name = %s", (self.table,)).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def read(self, entities: pd.Series, batch_id: int) -> pd.DataFrame:
        """The kept history of ``entities`` as it was before micro-batch ``batch_id`` (one query)."""
        rows = self.con.execute(
            _sql(
                "SELECT entity, version, value, prev_value FROM {t} WHERE bucket = %s AND entity = ANY(%s)",
                self.table,
            ),
            (self.bucket, self._wanted(entities)),
        ).fetchall()
        return self._decode(rows, batch_id)

    def write(self, history: pd.DataFrame, batch_id: int) -> None:
        """Replace the kept history of every entity in ``history`` (one transaction)."""
        if not len(history):
            return
        params = self._encode(history, batch_id)
        con = self.con
        with con.transaction(), con.cursor() as cur:
            self._lock(cur)
            cur.execute(
                "CREATE TEMP TABLE rtml_incoming (entity bytea, version bigint, last_ms bigint, value bytea) "
                "ON COMMIT DROP"
            )
            with cur.copy("COPY rtml_incoming FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["bytea", "int8", "int8", "bytea"])
                for row in params:
                    copy.write_row(row)
            changed = cur.execute(_sql(_UPSERT, self.table), (self.bucket,)).rowcount
            if changed != len(params):
                raise self._refused(len(params) - changed, batch_id)  # rolls the transaction back

    def evict_idle(self, idle_ms: int, batch_id: int) -> int:
        """Delete the bucket's entities whose newest event is ``idle_ms`` or more older than the
        bucket's newest (index range, O(evicted)); rows this batch wrote stay until a later one."""
        if not idle_ms:
            return 0
        table, con = self.table, self.con
        with con.transaction(), con.cursor() as cur:
            self._lock(cur)
            newest = cur.execute(
                _sql("SELECT max(last_ms) FROM {t} WHERE bucket = %s", table), (self.bucket,)
            ).fetchone()[0]
            if newest is None:
                return 0
            cur.execute(
                _sql("DELETE FROM {t} WHERE bucket = %s AND last_ms <= %s AND version < %s", table),
                (self.bucket, newest - idle_ms, batch_id),
            )
            return cur.rowcount

    def _lock(self, cur: Any) -> None:
        """The bucket's write lock, held to the end of the transaction (one writer per bucket)."""
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", (self.table, self.bucket))
