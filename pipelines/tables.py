"""rtml's Delta Lake tables (written with ``deltalake``, delta-rs: no JVM needed).

Tables live under ``spark.table_root`` (default: the sink root), a local path or an object-store URI
(``s3://bucket/prefix``; ``spark.storage_options`` are passed to delta-rs): ``scores``,
``quarantine`` and ``labelled``, each partitioned by ``event_date`` (UTC day of the event; for
quarantine, of the quarantining). The scoring job commits each micro-batch with an application
transaction ``(app_id, batch_id)``: a replayed batch id commits nothing (exactly once).

Query them with anything that reads Delta::

    duckdb -c "SELECT count(*) FROM delta_scan('<table_root>/scores')"
    spark.read.format("delta").load("<table_root>/scores")          # delta-spark
    pyarrow.table(deltalake.QueryBuilder().register("t", deltalake.DeltaTable("<table_root>/scores"))
        .execute("SELECT * FROM t WHERE event_date >= '2026-11-30'").read_all())  # not .to_pandas(): README
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from rtml.features.featurise import EVENT_MS

DATE = "event_date"
# the column each table's event_date is derived from
DATE_SOURCE = {
    "scores": EVENT_MS,
    "quarantine": "quarantined_at_ms",
    "labels": "labelled_at_ms",
    "labelled": EVENT_MS,
    "shadow": EVENT_MS,
}
# the change data feed lets a reader take just the rows appended since a version (labels refresh)
CREATE_CONFIG = {"delta.enableChangeDataFeed": "true"}


def table_uri(settings: Any, name: str) -> str:
    """Location of one table: a local path or an object-store URI, always a string."""
    root = getattr(settings.spark, "table_root", None) or str(settings.sink_root)
    return f"{str(root).rstrip('/')}/{name}"


def storage_options(settings: Any) -> dict[str, str] | None:
    raw = getattr(settings.spark, "storage_options", None) or {}
    opts = {k: v.get_secret_value() if hasattr(v, "get_secret_value") else str(v) for k, v in raw.items()}
    return opts or None


def open_table(settings: Any, name: str) -> Any | None:
    """The table, or None when it has not been written yet."""
    from deltalake import DeltaTable

    uri, opts = table_uri(settings, name), storage_options(settings)
    if not DeltaTable.is_deltatable(uri, storage_options=opts):
        return None
    return DeltaTable(uri, storage_options=opts)


class OpenTables:
    """The tables one writer appends to, kept open between its commits.

    Opening a table reads its log from the last checkpoint on: measured 22–61 ms per open on a table
    of 50–200 small commits, twice per commit. A table kept open reads only the log entries since
    its last commit (``update_incremental``), other writers' included (``rtml maintain``).
    """

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._open: dict[str, Any] = {}

    def get(self, name: str) -> Any | None:
        """The table at its newest version, or None when it has not been written yet."""
        dt = self._open.get(name)
        if dt is not None:
            try:
                dt.update_incremental()
                return dt
            except Exception:  # noqa: BLE001 - e.g. log entries cleaned up meanwhile: open it afresh
                self._open.pop(name, None)
        dt = open_table(self.settings, name)
        if dt is not None:
            self._open[name] = dt
        return dt

    def forget(self, name: str) -> None:
        """After a failed commit: the next one opens the table afresh."""
        self._open.pop(name, None)


def _once(
    settings: Any, name: str, app_id: str, batch_id: int, tables: OpenTables | None, write: Any
) -> bool:
    """``write(table or None)`` unless ``batch_id`` is already in ``name`` for ``app_id``: one read of
    the log serves the idempotence check and the commit. False: nothing written."""
    dt = tables.get(name) if tables is not None else open_table(settings, name)
    done = None if dt is None else dt.transaction_version(app_id)
    if done is not None and batch_id <= done:
        return False
    try:
        write(dt)
    except BaseException:  # the open table's state is unknown: the next commit opens it afresh
        if tables is not None:
            tables.forget(name)
        raise
    return True


def with_event_date(table: Any, source: str) -> Any:
    """``table`` (Arrow) plus the ``event_date`` partition column (``YYYY-MM-DD``, UTC) from ``source``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if DATE in table.column_names:
        table = table.drop_columns([DATE])
    ts = pc.cast(table.column(source), pa.timestamp("ms", tz="UTC"))
    return table.append_column(DATE, pc.strftime(ts, format="%Y-%m-%d"))


def committed_version(settings: Any, name: str, app_id: str) -> int | None:
    """The last batch id committed to ``name`` by ``app_id`` (None: none yet)."""
    dt = open_table(settings, name)
    return None if dt is None else dt.transaction_version(app_id)


def commit_batch(
    settings: Any, name: str, table: Any, app_id: str, batch_id: int, tables: OpenTables | None = None
) -> bool:
    """Append one micro-batch exactly once; False (nothing written) if ``batch_id`` is already in.

    The commit carries the application transaction ``(app_id, batch_id)`` and the batch id in its
    commit metadata (``rtml.batch_id``), so the outbox can find the newest batches without reading rows.
    ``tables``: the writer's open tables (one read of the log since its last commit, not the log).
    """
    import pyarrow as pa

    table = table.append_column("batch_id", pa.array([batch_id] * table.num_rows, pa.int64()))
    meta = {"rtml.batch_id": str(batch_id), "rtml.app_id": app_id}
    write = lambda dt: append(settings, name, table, {app_id: batch_id}, meta, dt)  # noqa: E731
    return _once(settings, name, app_id, batch_id, tables, write)


def append(
    settings: Any,
    name: str,
    table: Any,
    txns: dict[str, int],
    metadata: dict[str, str] | None = None,
    target: Any | None = None,
) -> None:
    """Append Arrow rows (``event_date`` added) in one commit carrying the application transactions.

    ``target``: the table already open at its newest version (None: open it here, if it exists).
    """
    from deltalake import CommitProperties, Transaction, write_deltalake

    table = with_event_date(table, DATE_SOURCE[name])
    props = CommitProperties(
        app_transactions=[Transaction(app_id=a, version=v) for a, v in txns.items()],
        custom_metadata=metadata,
    )
    if target is None:
        target = open_table(settings, name)
    new = target is None
    write_deltalake(
        table_uri(settings, name) if new else target,
        table,
        mode="append",
        partition_by=[DATE],
        schema_mode="merge",  # explanation columns come and go with scoring.explain_top_k
        storage_options=storage_options(settings),
        commit_properties=props,
        configuration=CREATE_CONFIG if new else None,
    )


def commit_files(
    settings: Any,
    name: str,
    files: list[dict],
    schema: Any,
    app_id: str,
    batch_id: int,
    tables: OpenTables | None = None,
) -> bool:
    """Commit data files the batch's tasks wrote (:mod:`rtml.pipelines.executor_sink`) in one commit
    with the application transaction ``(app_id, batch_id)``, like :func:`commit_batch`; False (nothing
    committed, the files stay orphans for ``vacuum``) if ``batch_id`` is already in.

    ``schema`` is the files' Arrow schema (``batch_id`` included, ``event_date`` not); columns the
    table lacks are added to its schema first, in a metadata-only commit (explanation columns come and
    go with ``scoring.explain_top_k``, as ``schema_mode="merge"`` does for the driver path).
    """
    write = lambda dt: _commit_files(settings, name, dt, files, schema, app_id, batch_id)  # noqa: E731
    return _once(settings, name, app_id, batch_id, tables, write)


def _commit_files(
    settings: Any, name: str, dt: Any | None, files: list[dict], schema: Any, app_id: str, batch_id: int
) -> None:
    import time

    import pyarrow as pa
    from deltalake import CommitProperties, Field, Schema, Transaction
    from deltalake.transaction import AddAction, create_table_with_add_actions

    now = int(time.time() * 1000)
    actions = [AddAction(f["path"], f["size"], {DATE: f["event_date"]}, now, True, f["stats"]) for f in files]
    props = CommitProperties(
        app_transactions=[Transaction(app_id=app_id, version=batch_id)],
        custom_metadata={"rtml.batch_id": str(batch_id), "rtml.app_id": app_id},
    )
    fields = [pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type) for f in schema]
    if dt is None:
        arrow = pa.schema([*fields, pa.field(DATE, pa.string())])
        create_table_with_add_actions(
            table_uri(settings, name), Schema.from_arrow(arrow), actions, mode="append",
            partition_by=[DATE], configuration=CREATE_CONFIG, storage_options=storage_options(settings),
            commit_properties=props,
        )  # fmt: skip
        return
    current = pa.schema(dt.schema().to_arrow())
    extra = [f for f in fields if f.name not in current.names]
    if extra:  # a metadata-only commit first: an append transaction does not evolve the schema
        dt.alter.add_columns([Field.from_arrow(f) for f in extra])
    dt.create_write_transaction(
        actions,
        "append",
        Schema.from_arrow(pa.schema(dt.schema().to_arrow())),
        [DATE],
        commit_properties=props,
    )


def changes_since(settings: Any, name: str, version: int | None) -> tuple[pd.DataFrame, int | None]:
    """Rows appended to ``name`` after table version ``version`` (None: all), and the version read."""
    import pyarrow as pa

    dt = open_table(settings, name)
    if dt is None:
        return pd.DataFrame(), version
    latest = dt.version()
    start = 0 if version is None else version + 1
    if start > latest:
        return pd.DataFrame(), latest
    rows = pa.table(dt.load_cdf(starting_version=start, ending_version=latest).read_all())
    frame = rows.to_pandas()
    frame = frame[frame["_change_type"] == "insert"] if len(frame) else frame
    frame = frame.sort_values("_commit_version", kind="stable")
    return frame.drop(columns=["_change_type", "_commit_version", "_commit_timestamp"]), latest


def recent_batch_ids(settings: Any, name: str, limit: int = 1000) -> list[int]:
    """Batch ids of the newest ``limit`` commits of ``name`` (from the log, no data read), ascending."""
    dt = open_table(settings, name)
    if dt is None:
        return []
    ids = {int(c["rtml.batch_id"]) for c in dt.history(limit) if "rtml.batch_id" in c}
    return sorted(ids)


def _day(ms: int) -> str:
    return pd.to_datetime(int(ms), unit="ms", utc=True).strftime("%Y-%m-%d")


def read_table(
    settings: Any,
    name: str,
    where: str | None = None,
    columns: list[str] | None = None,
    since_event_ms: int | None = None,
) -> pd.DataFrame:
    """Rows of a table; ``where`` is a SQL condition, ``since_event_ms`` prunes partitions
    (``event_date``) and rows (event time > it). An absent table reads as an empty frame.

    Read through delta-rs's engine (:func:`query`), not a pyarrow dataset over delta-rs's Python
    filesystem: with the latter a process aborted now and then at exit ("terminate called without an
    active exception", about one ``rtml explain`` in six).
    """
    dt = open_table(settings, name)
    if dt is None:
        return pd.DataFrame(columns=columns or [])
    conds = [where] if where else []
    if since_event_ms is not None:
        src = DATE_SOURCE[name]
        conds.append(f"{DATE} >= '{_day(since_event_ms)}' AND \"{src}\" > {int(since_event_ms)}")
    frame = query(dt, " AND ".join(f"({c})" for c in conds) or None, columns).to_pandas()
    if "batch_id" in frame.columns:  # file order is not commit order: batches in the order written
        frame = frame.sort_values("batch_id", kind="stable").reset_index(drop=True)
    return frame


def query(dt: Any, where: str | None = None, columns: list[str] | None = None) -> Any:
    """Arrow rows of a table through delta-rs's SQL engine (partition and file-statistics pruning).

    Used where files written by MERGE/UPDATE (string_view columns) meet files written by appends
    (string): pyarrow's dataset filters cannot compare the two, DataFusion can.
    """
    import pyarrow as pa
    from deltalake import QueryBuilder

    cols = ", ".join(f'"{c}"' for c in columns) if columns else "*"
    sql = f"SELECT {cols} FROM t" + (f" WHERE {where}" if where else "")
    table = pa.table(QueryBuilder().register("t", dt).execute(sql).read_all())
    fields = [pa.field(f.name, pa.string()) if pa.types.is_string_view(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))
