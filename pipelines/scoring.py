"""The streaming scoring job: Kafka -> validate -> features (Spark state) -> champion -> sinks.

Per micro-batch (``foreachBatch``) the sink resolves ``@champion`` once; a moved alias swaps the
model without a restart and every score row carries the version that produced it. Each micro-batch
is one Spark job (read, validate, state, score with ``mapInArrow``) whose Arrow result is written by
the driver: Parquet via pyarrow and Kafka via one long-lived producer. Scores go to
``<sink_root>/scores/batch_id=N`` (Parquet) and the scores topic; invalid events to
``<sink_root>/quarantine/batch_id=N`` and the quarantine topic with their reason and raw payload.
A replayed batch keeps its id, so Parquet output is overwritten, not duplicated (exactly once);
Kafka output is delivered from those Parquet batches by :mod:`pipelines.outbox`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from expectations.stream import StreamGate
from infra.settings import Settings
from infra.spec import StreamSpec
from models.registry import CHAMPION, alias_version
from pipelines.features import EVENT_MS, model_frame
from pipelines.outbox import KafkaOutbox


def make_scorer(
    tracking_uri: str, model_name: str, version: str, spec: StreamSpec
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """mapInArrow function: valid events are scored, invalid ones pass through with their reason."""

    def fn(batches: Iterator[Any]) -> Iterator[Any]:
        import numpy as np
        import pyarrow as pa

        from models.registry import load_model

        schema = _score_arrow_schema(spec)

        model = load_model(tracking_uri, model_name, version)
        for rb in batches:
            kafka_ms = (
                rb.column("timestamp")
                .cast(pa.timestamp("ms", tz="UTC"))
                .cast(pa.int64())
                .to_numpy(zero_copy_only=False)
            )
            frame = rb.to_pandas()
            valid = frame["_reason"].isna().to_numpy()
            X_all = model_frame(frame, spec)  # invalid rows pass through with their parsed inputs
            score = np.full(len(frame), np.nan)
            if valid.any():
                score[valid] = model.learner.score(X_all.loc[valid, model.columns])
            now = int(time.time() * 1000)
            out = frame[
                [
                    spec.event_id,
                    spec.event_time,
                    spec.entity_key,
                    EVENT_MS,
                    "partition",
                    "offset",
                    "_reason",
                    "value",
                    "topic",
                ]
            ].copy()
            out["score"] = score
            out["decision"] = np.where(valid, score >= model.learner.threshold, False).astype("int64")
            out["model_version"] = version
            out["scored_at_ms"] = now
            out["latency_ms"] = (now - kafka_ms).astype("int64")
            out["kafka_timestamp_ms"] = kafka_ms.astype("int64")
            for c in X_all.columns:
                out[c] = X_all[c]
            yield pa.RecordBatch.from_pandas(out, schema=schema, preserve_index=False)

    return fn


def _score_columns(spec: StreamSpec) -> list[tuple[str, str]]:
    """(name, Spark type) of the scorer's output, in order."""
    time_type = "bigint" if spec.event_time_format == "epoch_ms" else "string"
    return [
        (spec.event_id, "string"),
        (spec.event_time, time_type),
        (spec.entity_key, "string"),
        (EVENT_MS, "bigint"),
        ("partition", "int"),
        ("offset", "bigint"),
        ("_reason", "string"),
        ("value", "binary"),
        ("topic", "string"),
        ("score", "double"),
        ("decision", "bigint"),
        ("model_version", "string"),
        ("scored_at_ms", "bigint"),
        ("latency_ms", "bigint"),
        ("kafka_timestamp_ms", "bigint"),
        *[(n, "double") for n in spec.model_numeric_inputs],
        *[(n, "string") for n in spec.categorical_names],
    ]


def _score_schema(spec: StreamSpec) -> str:
    return ", ".join(f"`{n}` {t}" for n, t in _score_columns(spec))


def _score_arrow_schema(spec: StreamSpec) -> Any:
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "bigint": pa.int64(),
        "int": pa.int32(),
        "double": pa.float64(),
        "binary": pa.binary(),
    }
    return pa.schema([(n, types[t]) for n, t in _score_columns(spec)])


def _write_parquet(table: Any, directory: Path) -> None:
    """One file per micro-batch, replaced atomically: a replayed batch overwrites, never duplicates."""
    import os

    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / ".part-00000.parquet.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, directory / "part-00000.parquet")


class BatchSink:
    """foreachBatch target: one Spark job per micro-batch, then Arrow on the driver; keeps counters."""

    def __init__(self, settings: Settings, spec: StreamSpec) -> None:
        self.settings = settings
        self.spec = spec
        self.root = settings.sink_root
        self.version: str | None = None
        self.batches: list[dict[str, Any]] = []
        self.outbox = KafkaOutbox(settings, spec)
        self.gate = StreamGate(settings, spec)

    def close(self) -> None:
        self.outbox.close()
        self.gate.close()

    def resolve_champion(self) -> str:
        version = alias_version(self.settings, CHAMPION)
        if version is None:
            if self.version is None:
                raise RuntimeError(
                    f"no @{CHAMPION} version of model '{self.settings.mlflow.model_name}': "
                    "run `rtml bootstrap` first"
                )
            return self.version  # registry briefly unreachable or alias removed: keep serving the last one
        self.version = version
        return version

    def __call__(self, df: Any, batch_id: int) -> None:
        import numpy as np
        import pyarrow.compute as pc

        t0 = time.monotonic()
        version = self.resolve_champion()
        table = df.mapInArrow(
            make_scorer(self.settings.tracking_uri, self.settings.mlflow.model_name, version, self.spec),
            _score_schema(self.spec),
        ).toArrow()
        t_spark = time.monotonic() - t0
        name = f"batch_id={batch_id:09d}"
        invalid = pc.is_valid(table.column("_reason"))
        scored = table.filter(pc.invert(invalid)).drop_columns(["_reason", "value", "topic"])
        quarantine = self._quarantine(table.filter(invalid))
        _write_parquet(scored, self.root / "scores" / name)
        if quarantine.num_rows:
            _write_parquet(quarantine, self.root / "quarantine" / name)
        t_parquet = time.monotonic() - t0 - t_spark
        self.outbox.submit(name, scored, quarantine)  # sent while Spark works on the next batch
        self.gate.submit(batch_id, scored, version)  # every K-th batch, checked off the scoring path
        by_reason = (
            {
                str(r["values"]): int(r["counts"])
                for r in pc.value_counts(quarantine.column("reason")).to_pylist()
            }
            if quarantine.num_rows
            else {}
        )
        lat = scored.column("latency_ms").to_numpy() if scored.num_rows else None
        stats = {
            "batch_id": batch_id,
            "read": table.num_rows,
            "scored": scored.num_rows,
            "quarantined": quarantine.num_rows,
            "by_reason": by_reason,
            "model_version": version,
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat is not None else None,
            "latency_ms_p99": float(np.percentile(lat, 99)) if lat is not None else None,
            "seconds": round(time.monotonic() - t0, 3),
            "phases": {
                "spark": round(t_spark, 3),
                "parquet": round(t_parquet, 3),
                "kafka": round(time.monotonic() - t0 - t_spark - t_parquet, 3),
            },
        }
        stats_file = self.root / "_batches" / f"{name}.json"
        stats_file.parent.mkdir(parents=True, exist_ok=True)
        stats_file.write_text(json.dumps(stats))
        self.batches.append(stats)

    def _quarantine(self, bad: Any) -> Any:
        import base64

        import pyarrow as pa

        raw = bad.column("value").to_pylist()
        payload_b64 = [base64.b64encode(v or b"").decode() for v in raw]
        text = []
        for v in raw:
            try:
                text.append(v.decode("utf-8") if v is not None else None)
            except UnicodeDecodeError:
                text.append(None)
        now = int(time.time() * 1000)
        return pa.table(
            {
                "reason": bad.column("_reason"),
                "payload_b64": payload_b64,
                "payload": text,
                "topic": bad.column("topic"),
                "partition": bad.column("partition"),
                "offset": bad.column("offset"),
                "kafka_timestamp_ms": bad.column("kafka_timestamp_ms"),
                "quarantined_at_ms": pa.array([now] * bad.num_rows, pa.int64()),
            }
        )

    def summary(self) -> dict[str, Any]:
        return {**summarise_batches(self.batches), "quality": self.gate.summary()}


def summarise_batches(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over per-batch records (``BatchSink.batches`` or the ``<sink>/_batches/*.json`` files)."""
    reasons: dict[str, int] = {}
    for b in batches:
        for r, n in b["by_reason"].items():
            key = r.split(":")[0]
            reasons[key] = reasons.get(key, 0) + n
    versions = sorted({b["model_version"] for b in batches if b["scored"]}, key=int)
    return {
        "batches": len(batches),
        "read": sum(b["read"] for b in batches),
        "scored": sum(b["scored"] for b in batches),
        "quarantined": sum(b["quarantined"] for b in batches),
        "quarantined_by_reason": dict(sorted(reasons.items())),
        "model_versions": versions,
    }


def read_batch_records(settings: Settings) -> list[dict[str, Any]]:
    """The per-batch records the scoring job wrote, in batch order."""
    return [json.loads(p.read_text()) for p in sorted((settings.sink_root / "_batches").glob("*.json"))]


def build_query(
    spark: Any, settings: Settings, spec: StreamSpec, sink: BatchSink, available_now: bool
) -> Any:
    from pyspark.sql import functions as F
    from pyspark.sql.streaming.state import GroupStateTimeout

    from pipelines.entity_state import STATE_SCHEMA, make_state_fn
    from pipelines.spark_io import read_kafka_stream
    from pipelines.validation import validate

    raw = read_kafka_stream(
        spark, settings, settings.kafka.topics.events, "earliest", settings.spark.max_events_per_trigger
    )
    events = validate(raw, spec, settings.scoring.max_event_bytes)
    # raw payloads only travel on for quarantined events
    events = events.withColumn("value", F.when(F.col("_reason").isNotNull(), F.col("value")))
    if spec.aggregates or spec.time_features:
        buckets = settings.spark.entity_buckets
        events = events.withColumn(
            "_bucket",
            F.when(F.col("_reason").isNull(), F.pmod(F.hash(spec.entity_key), F.lit(buckets))).otherwise(-1),
        )
        extra = [f"`event_{t}` double" for t in spec.time_features] + [
            f"`{n}` double" for n in spec.aggregate_names
        ]
        out_ddl = ", ".join([_ddl(f) for f in events.drop("_bucket").schema.fields] + extra)
        out_cols = (
            [f.name for f in events.drop("_bucket").schema.fields]
            + [f"event_{t}" for t in spec.time_features]
            + spec.aggregate_names
        )
        key = (
            settings.scoring.pseudonym_key.get_secret_value()
            if settings.scoring.pseudonymise_entities and settings.scoring.pseudonym_key
            else None
        )
        events = events.groupBy("_bucket").applyInPandasWithState(
            make_state_fn(spec, out_cols, key), out_ddl, STATE_SCHEMA, "append", GroupStateTimeout.NoTimeout
        )
    writer = (
        events.writeStream.foreachBatch(sink)
        .outputMode("append")
        .option("checkpointLocation", str(settings.checkpoint_root / "scoring"))
    )
    writer = (
        writer.trigger(availableNow=True)
        if available_now
        else writer.trigger(processingTime=settings.spark.trigger_interval)
    )
    return writer.queryName("rtml-scoring").start()


def _ddl(field: Any) -> str:
    return f"`{field.name}` {field.dataType.simpleString()}"
