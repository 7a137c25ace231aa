"""The streaming scoring job: Kafka -> validate -> features (Spark state) -> champion -> sinks.

Per micro-batch (``foreachBatch``) the sink resolves ``@champion`` once; a moved alias swaps the
model without a restart and every score row carries the version that produced it. Scores go to
``<sink_root>/scores/batch_id=N`` (Parquet) and the scores topic; invalid events to
``<sink_root>/quarantine/batch_id=N`` and the quarantine topic with their reason and raw payload.
A replayed batch keeps its id, so Parquet output is overwritten, not duplicated (exactly once);
Kafka output is skipped for batches already marked delivered.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from infra.settings import Settings
from infra.spec import StreamSpec
from models.registry import CHAMPION, alias_version
from pipelines.features import EVENT_MS, model_frame
from pipelines.spark_io import write_kafka

SCORE_COLUMNS = ["score", "decision", "model_version", "scored_at_ms", "latency_ms"]


def _score_schema(spec: StreamSpec) -> str:
    time_type = "bigint" if spec.event_time_format == "epoch_ms" else "string"
    feats = [f"`{n}` double" for n in spec.model_numeric_inputs] + [
        f"`{n}` string" for n in spec.categorical_names
    ]
    return ", ".join(
        [
            f"`{spec.event_id}` string",
            f"`{spec.event_time}` {time_type}",
            f"`{spec.entity_key}` string",
            f"`{EVENT_MS}` bigint",
            "partition int",
            "offset bigint",
            "score double",
            "decision bigint",
            "model_version string",
            "scored_at_ms bigint",
            "latency_ms bigint",
            *feats,
        ]
    )


def make_scorer(
    tracking_uri: str, model_name: str, version: str, spec: StreamSpec
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """mapInArrow function: Arrow batches of featurised events -> Arrow batches of scores."""

    def fn(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        from models.registry import load_model

        model = load_model(tracking_uri, model_name, version)
        for rb in batches:
            kafka_ms = (
                rb.column("timestamp")
                .cast(pa.timestamp("ms", tz="UTC"))
                .cast(pa.int64())
                .to_numpy(zero_copy_only=False)
            )
            frame = rb.to_pandas()
            X = model_frame(frame, spec)
            score = model.learner.score(X[model.columns])
            now = int(time.time() * 1000)
            out = frame[
                [spec.event_id, spec.event_time, spec.entity_key, EVENT_MS, "partition", "offset"]
            ].copy()
            out["score"] = score.astype("float64")
            out["decision"] = (score >= model.learner.threshold).astype("int64")
            out["model_version"] = version
            out["scored_at_ms"] = now
            out["latency_ms"] = (now - kafka_ms).astype("int64")
            for c in X.columns:
                out[c] = X[c]
            yield pa.RecordBatch.from_pandas(out, preserve_index=False)

    return fn


class BatchSink:
    """foreachBatch target; keeps the run's counters."""

    def __init__(self, settings: Settings, spec: StreamSpec) -> None:
        self.settings = settings
        self.spec = spec
        self.root = settings.sink_root
        self.version: str | None = None
        self.batches: list[dict[str, Any]] = []

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
        from pyspark.sql import functions as F

        t0 = time.monotonic()
        version = self.resolve_champion()
        spec = self.spec
        df = df.persist()
        by_reason = {r["_reason"]: r["count"] for r in df.groupBy("_reason").count().collect()}
        read = sum(by_reason.values())
        scored_n = by_reason.pop(None, 0)
        name = f"batch_id={batch_id:09d}"
        scored = (
            df.filter(F.col("_reason").isNull())
            .mapInArrow(
                make_scorer(self.settings.tracking_uri, self.settings.mlflow.model_name, version, spec),
                _score_schema(spec),
            )
            .persist()
        )
        quarantine = df.filter(F.col("_reason").isNotNull()).select(
            F.col("_reason").alias("reason"),
            F.base64("value").alias("payload_b64"),
            F.when(F.is_valid_utf8(F.col("value").cast("string")), F.col("value").cast("string")).alias(
                "payload"
            ),
            "topic",
            "partition",
            "offset",
            F.col("timestamp").alias("kafka_timestamp"),
            F.unix_millis(F.current_timestamp()).alias("quarantined_at_ms"),
        )
        scored.write.mode("overwrite").parquet(str(self.root / "scores" / name))
        if by_reason:
            quarantine.write.mode("overwrite").parquet(str(self.root / "quarantine" / name))
        marker = self.root / "_kafka_delivered" / name
        if not marker.exists():
            topics = self.settings.kafka.topics
            payload = F.to_json(
                F.struct(spec.event_id, spec.event_time, "score", "decision", "model_version", "scored_at_ms")
            )
            write_kafka(
                scored.select(F.col(spec.event_id).alias("key"), payload.alias("value")),
                self.settings,
                topics.scores,
            )
            if by_reason:
                qv = F.to_json(
                    F.struct(
                        "reason",
                        "payload_b64",
                        "payload",
                        "topic",
                        "partition",
                        "offset",
                        "quarantined_at_ms",
                    )
                )
                write_kafka(quarantine.select(qv.alias("value")), self.settings, topics.quarantine)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        latency = (
            scored.select(F.percentile_approx("latency_ms", [0.5, 0.99]).alias("q")).first()["q"]
            if scored_n
            else None
        )
        stats = {
            "batch_id": batch_id,
            "read": read,
            "scored": scored_n,
            "quarantined": read - scored_n,
            "by_reason": by_reason,
            "model_version": version,
            "latency_ms_p50": latency[0] if latency else None,
            "latency_ms_p99": latency[1] if latency else None,
            "seconds": round(time.monotonic() - t0, 3),
        }
        stats_file = self.root / "_batches" / f"{name}.json"
        stats_file.parent.mkdir(parents=True, exist_ok=True)
        stats_file.write_text(json.dumps(stats))
        self.batches.append(stats)
        scored.unpersist()
        df.unpersist()

    def summary(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for b in self.batches:
            for r, n in b["by_reason"].items():
                key = r.split(":")[0]
                reasons[key] = reasons.get(key, 0) + n
        versions = sorted({b["model_version"] for b in self.batches if b["scored"]}, key=int)
        return {
            "batches": len(self.batches),
            "read": sum(b["read"] for b in self.batches),
            "scored": sum(b["scored"] for b in self.batches),
            "quarantined": sum(b["quarantined"] for b in self.batches),
            "quarantined_by_reason": dict(sorted(reasons.items())),
            "model_versions": versions,
        }


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


def reset_outputs(settings: Settings) -> None:
    """Forget the job's progress: checkpoint and sinks (used by --from-scratch)."""
    for p in (settings.checkpoint_root / "scoring", settings.sink_root):
        shutil.rmtree(p, ignore_errors=True)


def sink_path(settings: Settings, kind: str) -> Path:
    return settings.sink_root / kind
