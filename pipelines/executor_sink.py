"""Executors write, the driver commits: the scoring job's sink on a cluster (``spark.sink_writes``).

Each task of a micro-batch splits its rows as the driver path does (:func:`split_batch`: scores,
shadow scores, quarantine, duplicates), writes the Parquet data files of the ``scores``,
``shadow`` and ``quarantine`` tables itself (``pyarrow.dataset.write_dataset``, hive partitions
``event_date=...`` under the table location; an object store through delta-rs's own filesystem with
the same storage options) and returns only small metadata rows: one per file (path, size, partition,
rows, the Delta statistics read from the Parquet footer, the Arrow schema) and one per task with its
counts (read, duplicates, shadowed, explained, per-reason) and the produce->scored latencies as
value counts (exact percentiles on the driver from ``O(distinct ms)`` numbers, not rows).

The driver commits each table's files in one Delta commit with the application transaction of the
driver path (:func:`rtml.pipelines.tables.commit_files`): a replayed batch id commits nothing, and
the files of a failed attempt stay uncommitted (harmless; ``vacuum`` removes them). Kafka output
leaves after the commit from the committed files, read back ``spark.outbox_slice_rows`` rows at a
time (:mod:`rtml.pipelines.outbox`), so the driver never holds a whole micro-batch.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rtml.infra.config.spec import StreamSpec
from rtml.pipelines.entity_state import DUPLICATE
from rtml.pipelines.scorer import SHADOW_COLUMNS
from rtml.pipelines.shadow import shadow_rows
from rtml.pipelines.spark_conf import is_one_jvm
from rtml.pipelines.tables import DATE, DATE_SOURCE, with_event_date

META_DDL = (
    "kind string, tbl string, path string, size long, event_date string, rows long, stats string, blob binary"
)
TABLES = ("scores", "shadow", "quarantine")


def sink_mode(setting: str, master: str) -> str:
    """``driver`` or ``executors``: ``auto`` is the driver on a local master, executors elsewhere.

    >>> sink_mode("auto", "local[2]"), sink_mode("auto", "spark://h:7077"), sink_mode("driver", "yarn")
    ('driver', 'executors', 'driver')
    """
    if setting != "auto":
        return setting
    return "driver" if is_one_jvm(master) else "executors"


def split_batch(table: Any, spec: StreamSpec, quarantine: Any) -> tuple[Any, Any, Any, int]:
    """Scored rows, shadow rows, quarantine rows (duplicates too, by their reason) and duplicates."""
    import pyarrow.compute as pc

    invalid = pc.is_valid(table.column("_reason"))
    scored = table.filter(pc.invert(invalid)).drop_columns(["_reason", "value", "topic"])
    shadowed = shadow_rows(scored, spec)
    scored = scored.drop_columns(list(SHADOW_COLUMNS))
    bad = quarantine.table(table.filter(invalid))
    duplicates = int(pc.sum(pc.equal(table.column("_reason"), DUPLICATE)).as_py() or 0)
    return scored, shadowed, bad, duplicates


def explained(scored: Any) -> int:
    """Score rows of a batch that carry an explanation (0 with explanations off)."""
    if "explain_1_feature" not in scored.column_names:
        return 0
    return scored.num_rows - scored.column("explain_1_feature").null_count


def by_reason(quarantine: Any) -> dict[str, int]:
    """Quarantined rows per reason, duplicates left out (they are counted apart)."""
    import pyarrow.compute as pc

    if not quarantine.num_rows:
        return {}
    counts = pc.value_counts(quarantine.column("reason")).to_pylist()
    return {str(r["values"]): int(r["counts"]) for r in counts if r["values"] != DUPLICATE}


def filesystem(uri: str, options: dict[str, str] | None) -> tuple[Any, str]:
    """A pyarrow filesystem for a table location and the base path in it: the local disk, or
    delta-rs's object-store filesystem (same storage options as the commits) for a URI."""
    from pyarrow import fs

    from rtml.pipelines.spark_conf import is_local_path

    if is_local_path(uri):
        return fs.LocalFileSystem(), uri.removeprefix("file://")
    from deltalake.fs import DeltaStorageHandler

    scheme, _, rest = uri.partition("://")  # rooted at the bucket: the handler takes no "." base
    bucket, _, key = rest.partition("/")
    return fs.PyFileSystem(DeltaStorageHandler(f"{scheme}://{bucket}", options)), key.strip("/")


def file_stats(md: Any) -> str:
    """Delta ``stats`` JSON (numRecords, minValues, maxValues, nullCount) from a Parquet footer."""
    lo: dict[str, Any] = {}
    hi: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for g in range(md.num_row_groups):
        group = md.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            st, name = col.statistics, col.path_in_schema
            if st is None or "." in name:
                continue
            nulls[name] = nulls.get(name, 0) + (st.null_count or 0)
            if not st.has_min_max or not all(_plain(v) for v in (st.min, st.max)):
                continue
            lo[name] = st.min if name not in lo else min(lo[name], st.min)
            hi[name] = st.max if name not in hi else max(hi[name], st.max)
    return json.dumps({"numRecords": md.num_rows, "minValues": lo, "maxValues": hi, "nullCount": nulls})


def _plain(v: Any) -> bool:
    return isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))


def write_files(table: Any, name: str, uri: str, options: dict[str, str] | None, batch_id: int) -> list[dict]:
    """Write one task's rows of table ``name`` as Parquet under ``uri`` (hive ``event_date``
    partitions, ``batch_id`` column like the driver path); the metadata of each file written."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    table = table.append_column("batch_id", pa.array([batch_id] * table.num_rows, pa.int64()))
    table = with_event_date(table, DATE_SOURCE[name])
    fs, base = filesystem(uri, options)
    written: list[Any] = []
    ds.write_dataset(
        table,
        base,
        format="parquet",
        filesystem=fs,
        partitioning=ds.partitioning(pa.schema([(DATE, pa.string())]), flavor="hive"),
        basename_template=f"part-{batch_id:09d}-{uuid.uuid4().hex}-{{i}}.parquet",
        existing_data_behavior="overwrite_or_ignore",
        file_visitor=written.append,
    )
    schema = table.drop_columns([DATE]).schema.serialize().to_pybytes()
    out = []
    for w in written:
        rel = w.path[len(base) :].lstrip("/") if w.path.startswith(base) else w.path
        day = rel.split("/")[0].split("=", 1)[1]
        size = w.size if w.size is not None else fs.get_file_info(w.path).size
        out.append(dict(kind="file", tbl=name, path=rel, size=size, event_date=day, rows=w.metadata.num_rows,
                        stats=file_stats(w.metadata), blob=schema))  # fmt: skip
    return out


def task_writer(
    uris: dict[str, str], options: dict[str, str] | None, spec: StreamSpec, scoring: Any, batch_id: int
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The ``mapInArrow`` function of a batch: writes the task's files, yields metadata rows."""

    def write(batches: Iterator[Any]) -> Iterator[Any]:
        import numpy as np
        import pyarrow as pa

        from rtml.pipelines.quarantine import QuarantinePayloads

        table = pa.Table.from_batches(list(batches))
        if not table.num_rows:
            return
        quarantine = QuarantinePayloads(scoring, spec.entity_key)
        scored, shadowed, bad, duplicates = split_batch(table, spec, quarantine)
        rows: list[dict] = []
        for name, part in (("scores", scored), ("shadow", shadowed), ("quarantine", bad)):
            if part.num_rows:
                rows += write_files(part, name, uris[name], options, batch_id)
        counts = {"read": table.num_rows, "duplicates": duplicates, "shadowed": shadowed.num_rows,
                  "explained": explained(scored), "scored": scored.num_rows}  # fmt: skip
        lat = scored.column("latency_ms").to_numpy() if scored.num_rows else np.zeros(0, np.int64)
        values, n = np.unique(lat.astype(np.int64), return_counts=True)
        blob = np.stack([values, n.astype(np.int64)]).tobytes()
        stats = json.dumps({"counts": counts, "by_reason": by_reason(bad)})
        rows.append(dict(kind="task", tbl=None, path=None, size=None, event_date=None, rows=table.num_rows,
                         stats=stats, blob=blob))  # fmt: skip
        yield pa.RecordBatch.from_pylist(rows, schema=_meta_schema())

    return write


def _meta_schema() -> Any:
    import pyarrow as pa

    s, i = pa.string(), pa.int64()
    cols = [("kind", s), ("tbl", s), ("path", s), ("size", i), ("event_date", s), ("rows", i), ("stats", s)]
    return pa.schema([*cols, ("blob", pa.binary())])


@dataclass
class BatchFiles:
    """What the tasks of one micro-batch wrote and counted (gathered on the driver)."""

    files: dict[str, list[dict]] = field(default_factory=dict)
    schemas: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    latency_values: Any = None
    latency_counts: Any = None
    meta_rows: int = 0

    def rows(self, name: str) -> int:
        return sum(f["rows"] for f in self.files.get(name, []))

    def percentile(self, q: float) -> float | None:
        return weighted_percentile(self.latency_values, self.latency_counts, q)


def gather(meta: Any) -> BatchFiles:
    """The driver's view of a batch from its tasks' metadata rows (an Arrow table)."""
    import numpy as np
    import pyarrow as pa

    out = BatchFiles(meta_rows=meta.num_rows)
    pairs = []
    for r in meta.to_pylist():
        if r["kind"] == "file":
            out.files.setdefault(r["tbl"], []).append(r)
            if r["tbl"] not in out.schemas:
                out.schemas[r["tbl"]] = pa.ipc.read_schema(pa.py_buffer(r["blob"]))
            continue
        stats = json.loads(r["stats"])
        for k, v in stats["counts"].items():
            out.counts[k] = out.counts.get(k, 0) + v
        for k, v in stats["by_reason"].items():
            out.by_reason[k] = out.by_reason.get(k, 0) + v
        pairs.append(np.frombuffer(r["blob"], np.int64).reshape(2, -1))
    both = np.concatenate(pairs, axis=1) if pairs else np.zeros((2, 0), np.int64)
    values, inverse = np.unique(both[0], return_inverse=True)
    out.latency_values, out.latency_counts = values, np.bincount(inverse, weights=both[1]).astype(np.int64)
    return out


def weighted_percentile(values: Any, counts: Any, q: float) -> float | None:
    """``numpy.percentile(np.repeat(values, counts), q)`` (linear) without repeating the values.

    >>> weighted_percentile([1, 5, 9], [2, 1, 1], 50), float(__import__("numpy").percentile([1, 1, 5, 9], 50))
    (3.0, 3.0)
    """
    import numpy as np

    counts = np.asarray(counts, dtype=np.int64)
    if values is None or counts.sum() == 0:
        return None
    values, cum = np.asarray(values, dtype=float), np.cumsum(counts)
    pos = q / 100 * (cum[-1] - 1)
    lo, hi = values[np.searchsorted(cum, [math.floor(pos), math.ceil(pos)], side="right")]
    return float(lo + (hi - lo) * (pos - math.floor(pos)))


def committed_files(settings: Any, batch_id: int) -> dict[str, list[str]]:
    """Paths of the files the tasks wrote for ``batch_id`` that the tables hold (by file name: the
    tasks name them ``part-<batch_id>-...``): a replayed batch's Kafka output comes from these, not
    from the replay's uncommitted files. Reads the tables' logs (file list), no data."""
    import pyarrow as pa

    from rtml.pipelines.tables import open_table

    prefix, out = f"part-{batch_id:09d}-", {}
    for name in TABLES:
        dt = open_table(settings, name)
        if dt is not None:
            paths = pa.table(dt.get_add_actions()).column("path").to_pylist()
            out[name] = [p for p in paths if p.rsplit("/", 1)[-1].startswith(prefix)]
    return {k: v for k, v in out.items() if v}


def read_slices(uri: str, options: dict[str, str] | None, paths: list[str], rows: int) -> Iterator[Any]:
    """The committed files of a batch, ``rows`` rows at a time (Arrow tables, ``batch_id`` dropped)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, base = filesystem(uri, options)
    for path in paths:
        with fs.open_input_file(f"{base}/{path}" if base else path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=rows):
                yield pa.Table.from_batches([batch]).drop_columns(["batch_id"])
