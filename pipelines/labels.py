"""Late labels: ingest the labels topic into Parquet, join labels to scored events.

The labelled store (``<sink_root>/labelled/event_date=YYYY-MM-DD/``) holds every scored event whose
outcome is known: labelled by a label message, or -- once the spec's label horizon has passed
without one -- treated as the spec says (``negative`` or dropped). Events still inside the horizon
without a label are pending and not in the store yet.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rtml.features.featurise import EVENT_MS
from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec, parse_duration_seconds


def ingest_labels(settings: Settings, spec: StreamSpec) -> dict[str, int]:
    """Append new label messages to ``<sink_root>/labels`` (offsets tracked beside the files).

    Each file is named by its offset range, so a retried ingest rewrites the same file; duplicate
    labels of one event are harmless (the newest wins in the join).
    """
    from kafka import TopicPartition

    from rtml.infra.config.kafka_clients import connection_options, make_consumer

    assert spec.label is not None
    root = settings.sink_root / "labels"
    root.mkdir(parents=True, exist_ok=True)
    offsets_file = root / "_offsets.json"
    done: dict[str, int] = json.loads(offsets_file.read_text()) if offsets_file.exists() else {}
    topic = settings.kafka.topics.labels
    consumer = make_consumer(connection_options(settings))
    new = 0
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        positions, ends, entry = _checked_positions(settings, consumer, tps, done, root)
        done = {str(p): o for (_, p), o in positions.items()}  # a reset's position is kept, read or not
        offsets_file.write_text(json.dumps(done))
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
            frame.to_parquet(root / f"p{tp.partition}-{start:012d}-{end:012d}.parquet", index=False)
            done[str(tp.partition)] = end
            new += len(frame)
            offsets_file.write_text(json.dumps(done))
    finally:
        consumer.close()
    out = {"new_labels": new}
    if entry is not None:
        out |= {"offset_resets": len(entry["resets"]), "offsets_skipped": entry["offsets_skipped"]}
    return out


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


def _read_dir(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    if not path.exists() or not any(path.rglob("*.parquet")):
        return pd.DataFrame(columns=columns or [])
    return pd.read_parquet(path, columns=columns)


def build_labelled(settings: Settings, spec: StreamSpec, now_ms: int | None = None) -> dict[str, int]:
    """Join scored events (with the features they were scored on) to labels; rewrite the store."""
    assert spec.label is not None
    now_ms = now_ms or int(time.time() * 1000)
    scores = _read_dir(settings.sink_root / "scores")
    labels = _read_dir(settings.sink_root / "labels")
    out_root = settings.sink_root / "labelled"
    if scores.empty:
        return {"labelled": 0, "pending": 0, "unlabelled_as_negative": 0}
    scores = scores.drop(columns=["batch_id"], errors="ignore").drop_duplicates(spec.event_id, keep="last")
    if not labels.empty:
        labels = labels.sort_values("labelled_at_ms").drop_duplicates(spec.event_id, keep="last")
        joined = scores.merge(labels[[spec.event_id, spec.label.field]], on=spec.event_id, how="left")
    else:
        joined = scores.assign(**{spec.label.field: np.nan})
    horizon_ms = parse_duration_seconds(spec.label.horizon) * 1000
    missing = joined[spec.label.field].isna()
    expired = missing & (joined[EVENT_MS] < now_ms - horizon_ms)
    if spec.label.unlabelled_after_horizon == "negative":
        negative = 0 if isinstance(spec.label.positive, int | float) else f"not-{spec.label.positive}"
        joined.loc[expired, spec.label.field] = negative
        ready = ~missing | expired
    else:
        ready = ~missing
    store = joined[ready].copy()
    store["event_date"] = pd.to_datetime(store[EVENT_MS], unit="ms", utc=True).dt.strftime("%Y-%m-%d")
    tmp = out_root.with_name("labelled.tmp")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    store.to_parquet(tmp, partition_cols=["event_date"], index=False)
    shutil.rmtree(out_root, ignore_errors=True)
    tmp.rename(out_root)
    return {
        "labelled": int(len(store)),
        "pending": int((missing & ~expired).sum()),
        "unlabelled_as_negative": int(expired.sum())
        if spec.label.unlabelled_after_horizon == "negative"
        else 0,
    }


def read_labelled(settings: Settings, since_ms: int | None = None) -> pd.DataFrame:
    """The labelled store, optionally only events newer than since_ms (partition + row-group pruning)."""
    root = settings.sink_root / "labelled"
    if not root.exists() or not any(root.rglob("*.parquet")):
        return pd.DataFrame()
    filters = None
    if since_ms is not None:
        day = pd.to_datetime(since_ms, unit="ms", utc=True).strftime("%Y-%m-%d")
        filters = [("event_date", ">=", day), (EVENT_MS, ">", int(since_ms))]
    frame = pd.read_parquet(root, filters=filters)
    if "event_date" in frame:
        frame["event_date"] = frame["event_date"].astype(str)
    return frame.sort_values(EVENT_MS, kind="stable").reset_index(drop=True) if len(frame) else frame
