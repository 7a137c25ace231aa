"""Table maintenance: compaction, retention and vacuum of the Delta tables, cost following new data.

Per table (``scores``, ``quarantine``, ``labels``, ``labelled``), in this order:

1. **retention**: whole ``event_date`` partitions older than the cut-off are deleted (a delete on the
   partition column only: files are dropped from the log, none rewritten). The cut-off is the
   configured ``maintenance.retention_days`` of the table, but never later than the **guard**
   (:func:`compute_guard`): what the label horizon (event time), the retrain window (sliding window
   and the champion's training watermark), the drift and quality windows and the pending labels still
   need. A retention shorter than the guard is clamped to it and reported (``clamped``), never
   applied. No retention setting (the default) deletes nothing.
2. **compaction**: only partitions holding 2+ files under ``small_file_mb`` (what arrived since the
   last run: compacted partitions hold one file) are rewritten (``optimize.compact``: a
   ``dataChange=false`` commit, rows and content unchanged).
3. **vacuum**: files no longer referenced for ``vacuum_retain_hours`` are deleted.

One owner per store: ``labels`` and ``labelled`` are maintained by the caller under the labels flow's
Prefect concurrency limit (:mod:`rtml.flows.maintain`), so maintenance never interleaves with a
refresh. ``scores`` and ``quarantine`` are appended by the scoring job at the same time: Delta's
optimistic concurrency covers it. Measured with delta-rs 1.6.6 (tests/integration/test_maintain.py):
a compaction or a partition delete planned on a snapshot, committed after an append landed, commits
on top of it and the appended rows stay (the append's files were not in the plan; old partitions
are not appended to). The labels refresh reads ``scores`` and ``labels`` through the change data
feed from the version it last consumed, and the change data of a compaction or delete needs the
files they removed: those two tables are vacuumed only when the refresh has read past every commit
that removed files (else ``vacuum_skipped`` says why, and a later run vacuums).

delta-rs 1.6.6 keeps listing vacuumed tombstones (and writes VACUUM commits each time): on a local
table only files still present are vacuumed, so a replayed run commits nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from rtml.features.featurise import EVENT_MS
from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec, parse_duration_seconds
from rtml.pipelines.tables import DATE, open_table, query

TABLES = ("scores", "quarantine", "labels", "labelled")
LOCKED = ("labels", "labelled")  # the labels flow's stores: maintained under its concurrency limit
# table -> application id under which the labelled table records how far it read its change data
CDF_READERS = {"scores": "rtml-labelled-scores", "labels": "rtml-labelled-labels"}
DAY_MS = 86_400_000
MB = 1024 * 1024
_KEEPS_FILES = {"WRITE", "CREATE TABLE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES"}


@dataclass
class Guard:
    """Rows newer than ``keep_from_ms`` are needed; ``needs`` names each need's earliest time."""

    keep_from_ms: int
    by: str
    needs: dict[str, int] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        needs = {k: _day(v) for k, v in sorted(self.needs.items(), key=lambda kv: kv[1])}
        return {
            "keep_from": _day(self.keep_from_ms),
            "keep_from_ms": self.keep_from_ms,
            "by": self.by,
            "needs": needs,
        }


def _day(ms: int) -> str:
    import pandas as pd

    return pd.to_datetime(int(ms), unit="ms", utc=True).strftime("%Y-%m-%d")


def _ms(duration: str) -> int:
    return parse_duration_seconds(duration) * 1000


def compute_guard(
    settings: Settings,
    spec: StreamSpec,
    now_ms: int,
    newest_event_ms: int | None = None,
    watermark_ms: int | None = None,
    oldest_pending_ms: int | None = None,
) -> Guard:
    """The earliest time any reader still needs (a pure function of the clock ``now_ms`` and what the
    tables say). Label horizon in event time (the newest scored event, never later than now); the
    windows in wall time as their readers use them; ``watermark_ms``: the champion's training watermark
    (an incremental retrain reads everything after it)."""
    needs: dict[str, int] = {}
    if spec.label is not None:
        clock = min(now_ms, newest_event_ms) if newest_event_ms is not None else now_ms
        needs["label_horizon"] = clock - _ms(spec.label.horizon)
    needs["retrain_window"] = now_ms - _ms(settings.retrain.sliding_window)
    if watermark_ms is not None:
        needs["retrain_watermark"] = int(watermark_ms)
    needs["drift_window"] = now_ms - _ms(settings.drift.window)
    needs["drift_performance_window"] = now_ms - _ms(settings.drift.performance_window)
    needs["quality_window"] = now_ms - _ms(settings.quality.window)
    if oldest_pending_ms is not None:
        needs["pending_labels"] = int(oldest_pending_ms)
    by = min(needs, key=lambda k: needs[k])
    return Guard(needs[by], by, needs)


def table_guard(settings: Settings, spec: StreamSpec, now_ms: int, watermark_ms: int | None = None) -> Guard:
    """:func:`compute_guard` with the newest scored event and the oldest pending label read from the
    tables (log statistics, and only the partitions the guard would otherwise let go)."""
    from rtml.pipelines.labelled import STATE

    newest = _newest_event(settings)
    guard = compute_guard(settings, spec, now_ms, newest, watermark_ms)
    dt = open_table(settings, "labelled")
    pending = None
    if dt is not None:
        where = f"{DATE} < '{_day(guard.keep_from_ms)}' AND {STATE} = 'pending'"
        rows = query(dt, where, [EVENT_MS]).column(EVENT_MS).to_pylist()
        pending = min(rows) if rows else None
    return compute_guard(settings, spec, now_ms, newest, watermark_ms, pending)


def _newest_event(settings: Settings) -> int | None:
    import pyarrow as pa

    dt = open_table(settings, "scores")
    if dt is None:
        return None
    actions = pa.table(dt.get_add_actions(flatten=True))
    if f"max.{EVENT_MS}" not in actions.column_names:
        return None
    values = [v for v in actions.column(f"max.{EVENT_MS}").to_pylist() if v is not None]
    return int(max(values)) if values else None


def retention_cut(settings: Settings, name: str, guard: Guard, now_ms: int) -> dict[str, Any]:
    """Partitions before ``delete_before`` (a day) may go; None: keep all. ``clamped`` when the
    configured retention is shorter than the guard (the guard wins)."""
    days = getattr(settings.maintenance.retention_days, name, None)
    if days is None:
        return {"retention_days": None, "delete_before": None}
    wanted = now_ms - days * DAY_MS
    out: dict[str, Any] = {"retention_days": days}
    if wanted > guard.keep_from_ms:
        cut = guard.keep_from_ms
        out["clamped"] = {"configured_from": _day(wanted), "kept_from": _day(cut), "by": guard.by}
    else:
        cut = wanted
    out["delete_before"] = _day(cut)
    return out


def _actions(dt: Any) -> Any:
    import pyarrow as pa

    return pa.table(dt.get_add_actions(flatten=True)).to_pandas()


def maintain_table(
    settings: Settings, name: str, guard: Guard, now_ms: int, dry_run: bool = False
) -> dict[str, Any]:
    """Retention, compaction and vacuum of one table; returns what was (or, dry run, would be) done."""
    dt = open_table(settings, name)
    if dt is None:
        return {"table": name, "skipped": "not written yet"}
    out: dict[str, Any] = {"table": name, "version_before": int(dt.version())}
    out.update(retention_cut(settings, name, guard, now_ms))
    out.update(_retention(dt, out["delete_before"], dry_run))
    out.update(_compact(settings, open_table(settings, name), out["delete_before"], dry_run))
    out.update(_vacuum(settings, name, dt, dry_run))
    out["version_after"] = int(open_table(settings, name).version())
    return out


def _retention(dt: Any, before: str | None, dry_run: bool) -> dict[str, Any]:
    out = {"partitions_deleted": 0, "rows_deleted": 0}
    if before is None:
        return out
    acts = _actions(dt)
    col = f"partition.{DATE}"
    old = acts[acts[col] < before] if len(acts) else acts
    if old.empty:
        return out
    out["partitions_deleted"] = int(old[col].nunique())
    if dry_run:
        out["rows_deleted"] = int(old["num_records"].sum())
        return out
    result = dt.delete(f"{DATE} < '{before}'")
    out["rows_deleted"] = int(result.get("num_deleted_rows", 0))
    return out


def _compact(settings: Settings, dt: Any, before: str | None, dry_run: bool) -> dict[str, Any]:
    """Rewrite only the partitions with 2+ small files (not those retention deletes)."""
    import json

    cfg = settings.maintenance
    out = {"partitions_compacted": 0, "files_compacted": 0, "files_written": 0, "bytes_compacted": 0}
    acts = _actions(dt)
    if acts.empty:
        return out
    small = acts[acts["size_bytes"] < cfg.small_file_mb * MB]
    if before is not None:
        small = small[small[f"partition.{DATE}"] >= before]
    counts = small.groupby(f"partition.{DATE}").size()
    days = sorted(str(d) for d in counts[counts >= 2].index)
    if not days:
        return out
    chosen = small[small[f"partition.{DATE}"].isin(days)]
    out["partitions_compacted"] = len(days)
    if dry_run:
        out["files_compacted"], out["bytes_compacted"] = int(len(chosen)), int(chosen["size_bytes"].sum())
        return out
    m = dt.optimize.compact(partition_filters=[(DATE, "in", days)], target_size=int(cfg.target_file_mb * MB))
    removed = json.loads(m.get("filesRemoved", "{}") or "{}")
    out["files_compacted"], out["files_written"] = int(m["numFilesRemoved"]), int(m["numFilesAdded"])
    out["bytes_compacted"] = int(removed.get("totalSize", 0))
    return out


def cdf_unread_removal(settings: Settings, name: str, dt: Any, max_scan: int = 5000) -> str | None:
    """Why vacuuming ``name`` would break the labels refresh's change-data read (None: it would not)."""
    app = CDF_READERS.get(name)
    if app is None:
        return None
    labelled = open_table(settings, "labelled")
    read = None if labelled is None else labelled.transaction_version(app)
    if read is None:
        return "the labels refresh has not read this table yet"
    ahead = int(dt.version()) - int(read)
    if ahead <= 0:
        return None
    if ahead > max_scan:
        return f"the labels refresh is {ahead} versions behind"
    for commit in dt.history(ahead):
        if int(commit.get("version", -1)) <= read:
            continue
        op = str(commit.get("operation", ""))
        mode = str((commit.get("operationParameters") or {}).get("mode", "Append"))
        if op not in _KEEPS_FILES or (op == "WRITE" and mode != "Append"):
            return f"the labels refresh has not read version {commit.get('version')} ({op}) yet"
    return None


def _vacuum(settings: Settings, name: str, dt: Any, dry_run: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"files_vacuumed": 0, "bytes_vacuumed": 0, "vacuum_skipped": None}
    dt = open_table(settings, name)  # after this run's commits
    why = cdf_unread_removal(settings, name, dt)
    if why:
        out["vacuum_skipped"] = why
        return out
    hours = settings.maintenance.vacuum_retain_hours
    listed = dt.vacuum(retention_hours=hours, enforce_retention_duration=False, dry_run=True)
    present, size = _present(dt.table_uri, listed)
    out["files_vacuumed"], out["bytes_vacuumed"] = len(present), size
    if present and not dry_run:
        dt.vacuum(retention_hours=hours, enforce_retention_duration=False, dry_run=False)
    return out


def _present(table_uri: str, paths: list[str]) -> tuple[list[str], int | None]:
    """The listed files that still exist and their bytes (local tables; an object store: all, size
    unknown)."""
    root = table_uri.removeprefix("file://")
    if "://" in root:
        return list(paths), None
    found = [p if os.path.isabs(p) else os.path.join(root, p) for p in paths]
    found = [p for p in found if os.path.exists(p)]
    return found, int(sum(os.path.getsize(p) for p in found))


def maintain(
    settings: Settings,
    spec: StreamSpec,
    now_ms: int,
    tables: tuple[str, ...] = TABLES,
    watermark_ms: int | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Maintain ``tables`` with one guard (the caller holds the labels lock for :data:`LOCKED`)."""
    guard = table_guard(settings, spec, now_ms, watermark_ms)
    results = [maintain_table(settings, t, guard, now_ms, dry_run) for t in tables]
    warnings = [
        f"{r['table']}: retention {r['retention_days']}d clamped to {r['clamped']['kept_from']} "
        f"({r['clamped']['by']} needs it)"
        for r in results
        if r.get("clamped")
    ]
    return {"dry_run": dry_run, "guard": guard.payload(), "tables": results, "warnings": warnings}
