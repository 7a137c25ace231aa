"""The labelled table, maintained incrementally: its only writer is :func:`refresh_labelled`.

The ``labelled`` Delta table holds every scored event (the features it was scored on, its score)
with its outcome: ``label_state`` is ``labelled`` (a label message; the newest one wins),
``expired`` (the spec's label horizon passed, in event time, without one: labelled negative),
``dropped`` (the same under ``unlabelled_after_horizon: drop``: no label) or ``pending``.
A refresh does work proportional to what is new:

1. scored events appended to ``scores`` since the last refresh (the table's change data feed) are
   merged in, with any label that already arrived for them;
2. labels appended to ``labels`` since then are merged by event id into the events of the open
   window (the partitions from the day of the last expiry cut on: a label that comes more than a
   horizon after its event is not applied); labels whose event is not scored yet wait in the small
   ``labels_orphan`` table;
3. pending events whose horizon expired since the last refresh (event time: the newest scored
   event's time minus the horizon) are closed.

Progress is kept in the table's own log as application transactions (scores version, labels
version, expiry cut), each committed with the step it covers, so a crashed refresh resumes.
Readers (:func:`read_labelled`) take windows with partition pruning and never the whole history.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from rtml.features.featurise import EVENT_MS
from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec, parse_duration_seconds
from rtml.pipelines.tables import DATE, append, changes_since, open_table, query, storage_options, table_uri

TABLE, ORPHANS = "labelled", "labels_orphan"
APP_SCORES, APP_LABELS, APP_CUT = "rtml-labelled-scores", "rtml-labelled-labels", "rtml-labelled-cut"
STATE, AT = "label_state", "labelled_at_ms"
_LABEL_DTYPE = {"long": "Int64", "double": "Float64", "string": "string", "boolean": "boolean"}


def _day(ms: int) -> str:
    return pd.to_datetime(int(ms), unit="ms", utc=True).strftime("%Y-%m-%d")


def _txn(dt: Any, app: str) -> int | None:
    return None if dt is None else dt.transaction_version(app)


def _negative(spec: StreamSpec) -> Any:
    assert spec.label is not None
    return 0 if isinstance(spec.label.positive, int | float) else f"not-{spec.label.positive}"


def _arrow(frame: pd.DataFrame) -> Any:
    import pyarrow as pa

    return pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)


def _props(app: str, version: int) -> Any:
    from deltalake import CommitProperties, Transaction

    return CommitProperties(app_transactions=[Transaction(app_id=app, version=int(version))])


def _newest_labels(frame: pd.DataFrame, spec: StreamSpec) -> pd.DataFrame:
    assert spec.label is not None
    if frame.empty:
        return pd.DataFrame(columns=[spec.event_id, spec.label.field, AT])
    frame = frame[[spec.event_id, spec.label.field, AT]].copy()
    frame[spec.event_id] = frame[spec.event_id].astype(str)
    return frame.sort_values(AT, kind="stable").drop_duplicates(spec.event_id, keep="last")


def refresh_labelled(settings: Settings, spec: StreamSpec, now_ms: int | None = None) -> dict[str, int]:
    """One incremental refresh; returns counts (new labels, labelled, expired, pending, ...).

    ``now_ms`` overrides the event-time clock (default: the newest scored event's time seen so far).
    """
    assert spec.label is not None
    field, eid = spec.label.field, spec.event_id
    dt = open_table(settings, TABLE)
    new_scores, vs = changes_since(settings, "scores", _txn(dt, APP_SCORES))
    new_labels, vl = changes_since(settings, "labels", _txn(dt, APP_LABELS))
    orphans = _read_orphans(settings)
    candidates = _newest_labels(pd.concat([orphans, new_labels], ignore_index=True), spec)
    out = {"new_scored": 0, "new_labels": int(len(new_labels)), "labelled": 0, "orphan_labels": 0}
    cut_prev = _txn(dt, APP_CUT)  # the last horizon cut (inserts and label merges leave it)

    # 1. newly scored events, with the labels that were waiting for them
    consumed: set[str] = set()
    closed_on_arrival = 0
    if len(new_scores):
        rows = new_scores.drop(columns=["batch_id", DATE], errors="ignore")
        rows = rows.assign(**{eid: rows[eid].astype(str)}).drop_duplicates(eid, keep="last")
        rows = rows.drop(columns=[field, AT, STATE], errors="ignore").merge(candidates, on=eid, how="left")
        rows[STATE] = rows[field].notna().map({True: "labelled", False: "pending"})
        rows[AT] = rows[AT].astype("Int64")
        rows[field] = rows[field].astype(_LABEL_DTYPE[spec.label.type])
        closed_on_arrival = _close_late(rows, spec, cut_prev)
        consumed = set(rows.loc[rows[field].notna(), eid])
        out["new_scored"], out["labelled"] = int(len(rows)), len(consumed)
        dt = _insert(settings, dt, rows, vs, eid)
    elif vs is not None and dt is not None and (_txn(dt, APP_SCORES) or -1) < vs:
        # only non-inserts were read (a retention delete, a compaction): record the progress, so
        # they are not read again and maintenance may vacuum the files they removed
        dt = _mark(settings, dt, APP_SCORES, vs)

    # 2. labels for events scored before: merged into the open window; the rest wait as orphans
    horizon_ms = parse_duration_seconds(spec.label.horizon) * 1000
    remaining = candidates[~candidates[eid].isin(consumed)]
    matched: set[str] = set()
    if dt is not None and len(remaining):
        # events whose horizon closed before the day of the last cut take no more labels
        floor = _day(cut_prev if cut_prev is not None else _min_event(dt))
        found = _window_ids(dt, eid, remaining[eid].tolist(), floor)
        matched = set(found[eid])
    waiting = remaining[~remaining[eid].isin(matched)]
    before = set(orphans[eid]) if len(orphans) else set()
    if set(waiting[eid]) != before or len(new_labels):
        _write_orphans(settings, waiting)  # before the labels version moves: a crash loses none
    out["orphan_labels"] = int(len(waiting))
    if dt is not None and matched:
        hits = remaining[remaining[eid].isin(matched)]
        if len(hits):
            src = hits.merge(found, on=eid)
            (
                dt.merge(
                    _arrow(src),
                    predicate=f"t.{eid} = s.{eid} AND t.{DATE} = s.{DATE} AND {_days_in(src[DATE])}",
                    source_alias="s",
                    target_alias="t",
                    commit_properties=_props(APP_LABELS, vl if vl is not None else 0),
                )
                .when_matched_update(
                    {field: f"s.{field}", AT: f"s.{AT}", STATE: "'labelled'"},
                    predicate=f"t.{AT} IS NULL OR s.{AT} >= t.{AT}",
                )
                .execute()
            )
            out["labelled"] += int(len(hits))
    if vl is not None and dt is not None and (_txn(dt, APP_LABELS) or -1) < vl:
        dt = _mark(settings, dt, APP_LABELS, vl)

    # 3. the horizon, in event time
    expired = 0
    if dt is not None:
        clock = now_ms if now_ms is not None else _max_event(dt)
        cut = int(clock - horizon_ms)
        if cut_prev is None or cut > cut_prev:
            expired = _expire(dt, spec, cut, cut_prev)
        dt = open_table(settings, TABLE)
        out["pending"] = _count_pending(dt, cut)
    else:
        out["pending"] = 0
    expired += closed_on_arrival
    out["expired"] = expired
    out["unlabelled_as_negative"] = expired if spec.label.unlabelled_after_horizon == "negative" else 0
    return out


def _close_late(rows: pd.DataFrame, spec: StreamSpec, cut: int | None) -> int:
    """Close, in place, new unlabelled rows the last cut has already passed (a late partition, a
    replay): they are inserted expired (or dropped), in the insert's own commit. Expiry reads only
    the days from the last cut's on, so such a row left pending stayed pending and uncounted."""
    assert spec.label is not None
    if cut is None:
        return 0
    late = (rows[STATE] == "pending") & (rows[EVENT_MS] <= cut)
    if late.any():
        negative = spec.label.unlabelled_after_horizon == "negative"
        rows.loc[late, STATE] = "expired" if negative else "dropped"
        if negative:
            rows.loc[late, spec.label.field] = _negative(spec)
    return int(late.sum())


def _insert(settings: Settings, dt: Any, rows: pd.DataFrame, vs: int | None, eid: str) -> Any:
    """New scored rows: appended when the table is new, else merged by (event id, date): an event
    scored twice (a replay under a new query) keeps its first row and its label."""
    from rtml.pipelines.tables import with_event_date

    table = _arrow(rows)
    if dt is None:
        append(settings, TABLE, table, {APP_SCORES: int(vs or 0)})
        return open_table(settings, TABLE)
    table = with_event_date(table, EVENT_MS)
    (
        dt.merge(
            table,
            predicate=f"t.{eid} = s.{eid} AND t.{DATE} = s.{DATE} AND {_days_in(table.column(DATE))}",
            source_alias="s",
            target_alias="t",
            merge_schema=True,
            commit_properties=_props(APP_SCORES, int(vs or 0)),
        )
        .when_not_matched_insert_all()
        .execute()
    )
    return dt


def _days_in(values: Any) -> str:
    """A literal partition filter on the target (``t.event_date IN (...)``): only those days' files
    are read by a MERGE, whatever the engine infers from the join condition."""
    days = sorted({str(v) for v in (values.to_pylist() if hasattr(values, "to_pylist") else values)})
    return f"t.{DATE} IN ({', '.join(repr(d) for d in days)})"


def _mark(settings: Settings, dt: Any, app: str, version: int) -> Any:
    """Record progress without touching data: an empty append carrying the transaction."""
    import pyarrow as pa

    schema = dt.schema().to_arrow()
    empty = pa.Table.from_batches([], schema=pa.schema(schema))
    append(settings, TABLE, empty.drop_columns([DATE]), {app: version})
    return open_table(settings, TABLE)


def _window_ids(dt: Any, eid: str, ids: list[str], floor: str) -> pd.DataFrame:
    """(event id, event_date) of the given events in the open window (partitions >= floor)."""
    frame = query(dt, f"{DATE} >= '{floor}'", [eid, DATE]).to_pandas()
    return frame[frame[eid].isin(set(ids))].drop_duplicates(eid)


def _stat(dt: Any, column: str, how: str) -> int:
    import pyarrow as pa

    actions = pa.table(dt.get_add_actions(flatten=True))
    name = f"{how}.{column}"
    if name not in actions.column_names or actions.num_rows == 0:
        return 0
    values = [v for v in actions.column(name).to_pylist() if v is not None]
    return int((max if how == "max" else min)(values)) if values else 0


def _max_event(dt: Any) -> int:
    """The newest event time in the table, from the log's file statistics (no data read)."""
    return _stat(dt, EVENT_MS, "max")


def _min_event(dt: Any) -> int:
    return _stat(dt, EVENT_MS, "min")


def _expire(dt: Any, spec: StreamSpec, cut: int, cut_prev: int | None) -> int:
    """Close pending events at or before ``cut``; only the partitions between the two cuts."""
    assert spec.label is not None
    pred = f"{STATE} = 'pending' AND {EVENT_MS} <= {cut} AND {DATE} <= '{_day(cut)}'"
    if cut_prev is not None:
        pred += f" AND {DATE} >= '{_day(cut_prev)}'"
    updates = {STATE: "'dropped'"}
    if spec.label.unlabelled_after_horizon == "negative":
        updates[STATE] = "'expired'"
        neg = _negative(spec)
        updates[spec.label.field] = str(neg) if isinstance(neg, int) else f"'{neg}'"
    result = dt.update(updates=updates, predicate=pred, commit_properties=_props(APP_CUT, cut))
    return int(result.get("num_updated_rows", 0))


def _count_pending(dt: Any, cut: int) -> int:
    where = f"{DATE} >= '{_day(cut)}' AND {STATE} = 'pending'"
    return int(query(dt, where, [STATE]).num_rows)


def _read_orphans(settings: Settings) -> pd.DataFrame:
    dt = open_table(settings, ORPHANS)
    return pd.DataFrame() if dt is None else query(dt).to_pandas()


def _write_orphans(settings: Settings, frame: pd.DataFrame) -> None:
    """Labels whose event is not scored yet (a small table, rewritten whole)."""
    from deltalake import write_deltalake

    write_deltalake(
        table_uri(settings, ORPHANS),
        _arrow(frame),
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=storage_options(settings),
    )


def labelled_version(settings: Settings) -> int | None:
    """The labelled table's current version (None: not written yet): what a window was read at."""
    dt = open_table(settings, TABLE)
    return None if dt is None else int(dt.version())


def read_labelled(
    settings: Settings, since_ms: int | None = None, version: int | None = None
) -> pd.DataFrame:
    """Events with an outcome, optionally only those newer than since_ms (partition + file pruning),
    oldest first, with the columns the store always had (score columns, label, ``event_date``).

    ``version``: read the table as it was at that version (time travel: a model's window again).
    """
    dt = open_table(settings, TABLE)
    if dt is None:
        return pd.DataFrame()
    if version is not None:
        dt.load_as_version(version)
    where = f"{STATE} IN ('labelled', 'expired')"  # not pending, not dropped
    if since_ms is not None:
        where += f" AND {DATE} >= '{_day(since_ms)}' AND {EVENT_MS} > {int(since_ms)}"
    frame = query(dt, where).to_pandas()
    frame = frame.drop(columns=[STATE, AT, "batch_id"], errors="ignore")
    return frame.sort_values(EVENT_MS, kind="stable").reset_index(drop=True) if len(frame) else frame
