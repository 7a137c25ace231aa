"""Late labels: ingest the labels topic into the ``labels`` Delta table.

The join of labels to scored events is :mod:`rtml.pipelines.labelled` (incremental).
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from rtml.infra.config.files import replace_file
from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec

INGEST_APP = "rtml-labels-ingest"
OFFSETS_KEY = "rtml.label_offsets"  # commit metadata: the topic offsets after that read (+ "_seq")
HISTORY_SCAN = 200  # newest commits searched for the offsets (label reads, refresh marks, compactions)
_log = logging.getLogger(__name__)


def ingest_labels(settings: Settings, spec: StreamSpec) -> dict[str, int]:
    """Append new label messages to the ``labels`` Delta table (offsets tracked in
    ``<sink_root>/labels/_offsets.json``, with the ingest's sequence number, and in the commit of each
    read, so a run on another machine, or after the local file was lost, resumes where the table is).

    Each read is committed once (:func:`_append_labels`); duplicate labels of one event are harmless
    (the newest wins in the join).
    """
    from kafka import TopicPartition

    from rtml.infra.config.kafka_clients import connection_options, make_consumer

    assert spec.label is not None
    root = settings.sink_root / "labels"
    root.mkdir(parents=True, exist_ok=True)
    offsets_file = root / "_offsets.json"
    done, seq = _resume_point(settings, offsets_file)
    topic = settings.kafka.topics.labels
    consumer = make_consumer(connection_options(settings))
    new = 0
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        positions, ends, entry = _checked_positions(settings, consumer, tps, done, root)
        done = {str(p): o for (_, p), o in positions.items()}  # a reset's position is kept, read or not
        replace_file(offsets_file, json.dumps({**done, "_seq": seq}))
        consumer.assign(tps)
        for tp in tps:
            start = done[str(tp.partition)]
            end = ends[(tp.topic, tp.partition)]
            if end <= start:
                continue
            consumer.seek(tp, start)
            values: list[bytes] = []
            while consumer.position(tp) < end:
                for recs in consumer.poll(timeout_ms=500, max_records=50_000).values():
                    values.extend(r.value for r in recs if r.offset < end)
            frame = pd.read_json(io.BytesIO(b"\n".join(values)), lines=True, dtype={spec.event_id: str})
            keep = [spec.event_id, spec.label.field, "labelled_at_ms"]
            frame = frame[[c for c in keep if c in frame.columns]]
            seq += 1
            done[str(tp.partition)] = end
            _append_labels(settings, spec, frame, seq, {**done, "_seq": seq})
            new += len(frame)
            replace_file(offsets_file, json.dumps({**done, "_seq": seq}))
    finally:
        consumer.close()
    out = {"new_labels": new}
    if entry is not None:
        out |= {"offset_resets": len(entry["resets"]), "offsets_skipped": entry["offsets_skipped"]}
    return out


def _resume_point(settings: Settings, offsets_file: Path) -> tuple[dict[str, int], int]:
    """Offsets and sequence number to continue from: the local file, unless the labels table has
    committed a later read (another machine ran the ingest, or the file was lost): then the offsets
    stored in that commit. Tables on an object store are shared; this file is not."""
    from rtml.pipelines.tables import committed_version, open_table

    done: dict[str, int] = json.loads(offsets_file.read_text()) if offsets_file.exists() else {}
    seq = int(done.pop("_seq", 0))
    committed = committed_version(settings, "labels", INGEST_APP) or 0
    if committed <= seq:
        return done, seq
    dt = open_table(settings, "labels")
    for commit in dt.history(HISTORY_SCAN) if dt is not None else []:
        stored = commit.get(OFFSETS_KEY)
        if stored:
            offsets = json.loads(stored)
            if int(offsets.get("_seq", -1)) == committed:
                offsets.pop("_seq")
                return {str(p): int(o) for p, o in offsets.items()}, committed
    _log.warning(
        "labels table committed ingest read %d, the local offsets only %d, and its commits carry no "
        "offsets: reading on from the local offsets",
        committed,
        seq,
    )
    return done, seq


def _append_labels(
    settings: Settings,
    spec: StreamSpec,
    frame: pd.DataFrame,
    seq: int,
    offsets: dict[str, int] | None = None,
) -> None:
    """Append one read of label messages to the ``labels`` table, exactly once.

    The commit carries the ingest's sequence number (kept beside the offsets) as an application
    transaction, and the offsets after this read in its metadata: a crash after the commit and before
    the offsets were saved re-reads the same range and commits nothing.
    """
    import pyarrow as pa

    from rtml.pipelines.tables import append, committed_version

    if (committed_version(settings, "labels", INGEST_APP) or 0) >= seq:
        return
    frame = frame.assign(**{spec.event_id: frame[spec.event_id].astype(str)})
    if "labelled_at_ms" not in frame:
        frame["labelled_at_ms"] = int(time.time() * 1000)
    frame["labelled_at_ms"] = frame["labelled_at_ms"].fillna(int(time.time() * 1000)).astype("int64")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {OFFSETS_KEY: json.dumps(offsets, sort_keys=True)} if offsets is not None else None
    append(settings, "labels", table, {INGEST_APP: seq}, meta)


def _checked_positions(
    settings: Settings, consumer: Any, tps: list[Any], done: dict[str, int], root: Path
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int], dict[str, Any] | None]:
    """Where to read each partition from, the true log ends and the recorded reset (or None).

    The stored offsets are checked against the log as the scoring job's are (``kafka.on_offset_reset``,
    :mod:`rtml.pipelines.offset_reset`): a labels topic recreated or emptied by a broker reset fails
    the ingest with one line, or is read from its start / end with the reset recorded under
    ``<sink>/labels/_offset_resets`` and logged; never skipped silently.
    """
    from rtml.pipelines.kafka_source import log_bounds
    from rtml.pipelines.offset_reset import RECORDS_DIR, log_entry, plan, record, trusted_ends

    topic = settings.kafka.topics.labels
    policy = settings.kafka.on_offset_reset
    lo: dict[tuple[str, int], int] = {}
    hi: dict[tuple[str, int], int] = {}
    exact: set[tuple[str, int]] = set()
    if tps:
        begin, ends, sure = log_bounds(consumer, tps)
        lo = {(tp.topic, tp.partition): o for tp, o in begin.items()}
        hi = {(tp.topic, tp.partition): o for tp, o in ends.items()}
        exact = {(tp.topic, tp.partition) for tp in sure}
    checkpoint = {(topic, int(p)): o for p, o in done.items()}
    positions, resets, new = plan(checkpoint, lo, trusted_ends(checkpoint, hi, exact), policy)
    entry = record(root / RECORDS_DIR, {topic: done}, policy, resets, new if done else [], lo)
    if entry is not None:
        log_entry(entry)
    return positions, hi, entry
