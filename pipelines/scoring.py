"""The streaming scoring job: Kafka -> validate -> features (Spark state) -> champion -> sinks.

Per micro-batch (``foreachBatch``) the sink resolves ``@champion`` once and hands the version to
the batch's tasks as a job property; a moved alias swaps the model without a restart and every
score row carries the version that produced it. Only audited moves are followed
(:mod:`rtml.pipelines.champion_guard`). Each micro-batch is one Spark job (read, validate,
then features and scores in one Python stage: :mod:`rtml.pipelines.scorer`). In local mode its
Arrow result is written by the driver: Delta tables via delta-rs and Kafka via one long-lived
producer; on a cluster (``spark.sink_writes``) the tasks write the Delta data files and the driver
only commits them (:mod:`rtml.pipelines.executor_sink`). Each batch record says which path ran
(``sink``) and the most rows the driver held at once (``driver_rows_max``). Scores go to
the ``scores`` Delta table (:mod:`rtml.pipelines.tables`) and the scores topic; invalid events to
the ``quarantine`` table and the quarantine topic with their reason, Kafka coordinates
and payload (raw, pseudonymised, encrypted or dropped: :mod:`rtml.pipelines.quarantine`).
Duplicate events (reason ``duplicate_event``: :mod:`rtml.pipelines.entity_state`) go there too but
are counted apart: per batch, read = scored + quarantined + duplicates.
Each batch is committed with the application transaction (query id, batch id): a replayed batch
keeps its id and commits nothing (exactly once); Kafka output is delivered from the committed
batches by :mod:`rtml.pipelines.outbox`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from rtml.expectations.stream import StreamGate
from rtml.infra.config.files import replace_file
from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec
from rtml.pipelines.champion_guard import ChampionGuard
from rtml.pipelines.executor_sink import (
    META_DDL,
    TABLES,
    by_reason,
    committed_files,
    explained,
    gather,
    read_slices,
    sink_mode,
    split_batch,
    task_writer,
)
from rtml.pipelines.offset_reset import RECORDS_DIR, for_batch, mark_taken
from rtml.pipelines.outbox import KafkaOutbox
from rtml.pipelines.planner_daemons import PlannerStops
from rtml.pipelines.quarantine import QuarantinePayloads
from rtml.pipelines.scorer import KAFKA_MS, SHADOW_PROPERTY, VERSION_PROPERTY
from rtml.pipelines.tables import OpenTables, commit_batch, commit_files

log = logging.getLogger(__name__)


def query_app_id(settings: Settings, kind: str) -> str:
    """The Delta application id of one sink: the streaming query's id (stable across restarts from
    its checkpoint, new after a checkpoint reset, whose batch ids start again at 0) and the sink."""
    meta = settings.checkpoint_root / "scoring" / "metadata"
    qid = json.loads(meta.read_text().splitlines()[0])["id"] if meta.exists() else "no-checkpoint"
    return f"rtml-scoring-{qid}-{kind}"


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
        self.metrics: Any = None  # rtml.pipelines.metrics.ScoringMetrics, set by the entry point
        self.guard = ChampionGuard(settings)
        self.quarantine = QuarantinePayloads(settings.scoring, spec.entity_key)
        self.tables = OpenTables(settings)  # this job is the tables' one writer of micro-batches
        self.planners = PlannerStops()  # Spark's data source planning processes, idle once the query runs

    def close(self) -> None:
        self.outbox.close()
        self.gate.close()

    def resolve_champion(self) -> str:
        """The audited @champion (one registry call); an unaudited move alerts and is not followed."""
        self.version = self.guard.resolve()
        return self.version

    def __call__(self, df: Any, batch_id: int) -> None:
        t0 = time.monotonic()
        version = self.resolve_champion()
        sc = df.sparkSession.sparkContext
        sc.setLocalProperty(VERSION_PROPERTY, version)  # read by the tasks
        shadow = self.guard.shadow_version()
        sc.setLocalProperty(SHADOW_PROPERTY, shadow or "")
        name = f"batch_id={batch_id:09d}"
        mode = sink_mode(self.settings.spark.sink_writes, sc.master)
        write = self._write_on_executors if mode == "executors" else self._write_on_driver
        self.planners.before_batch(df.sparkSession)
        out, lat = write(df, batch_id, name, version)
        self.planners.after_read(df.sparkSession, out["read"])
        stats = {
            "batch_id": batch_id,
            **{k: out[k] for k in ("read", "scored", "quarantined", "duplicates", "by_reason")},
            "model_version": version,
            "shadow_version": shadow,
            "shadowed": out["shadowed"],
            "explained": out["explained"],
            **self.guard.batch_fields(),
            "latency_ms_p50": out["p50"],
            "latency_ms_p99": out["p99"],
            "sink": mode,  # who wrote the data files
            "driver_rows_max": out["driver_rows"],  # most rows the driver held at once (outbox aside)
            "seconds": round(time.monotonic() - t0, 3),
            "ended_at_ms": int(time.time() * 1000),
            "phases": {
                "spark": round(out["t_spark"], 3),
                "parquet": round(out["t_commit"], 3),
                "kafka": round(time.monotonic() - t0 - out["t_spark"] - out["t_commit"], 3),
            },
        }
        log.info(
            "batch %d: sink=%s read=%d driver_rows_max=%d outbox_slice_max=%d",
            batch_id, mode, stats["read"], stats["driver_rows_max"], self.outbox.max_rows_held,
        )  # fmt: skip
        stats_file = self.root / "_batches" / f"{name}.json"
        resets = for_batch(self.root / RECORDS_DIR, stats_file)  # the source's resets go on record
        stats["offset_resets"] = resets
        stats["offsets_skipped"] = sum(e["offsets_skipped"] for e in resets)
        replace_file(stats_file, json.dumps(stats))  # readers never see a half-written record
        mark_taken(self.root / RECORDS_DIR, resets)  # after the record holds them: a crash keeps them pending
        self.batches.append(stats)
        if self.metrics is not None:
            self.metrics.record_batch(stats, *lat)

    def _write_on_driver(self, df: Any, batch_id: int, name: str, version: str) -> tuple[dict, tuple]:
        """The whole batch as Arrow on the driver, Delta files written and committed here (local mode)."""
        import numpy as np

        t0 = time.monotonic()
        table = df.toArrow()
        t_spark = time.monotonic() - t0
        scored, shadowed, quarantine, duplicates = split_batch(table, self.spec, self.quarantine)
        commit_batch(
            self.settings, "scores", scored, query_app_id(self.settings, "scores"), batch_id, self.tables
        )
        if shadowed.num_rows:  # beside the champion's scores, never acted on
            app_id = query_app_id(self.settings, "shadow")
            commit_batch(self.settings, "shadow", shadowed, app_id, batch_id, self.tables)
        if quarantine.num_rows:
            app_id = query_app_id(self.settings, "quarantine")
            commit_batch(self.settings, "quarantine", quarantine, app_id, batch_id, self.tables)
        t_commit = time.monotonic() - t0 - t_spark
        self.outbox.submit(name, scored, quarantine)  # sent while Spark works on the next batch
        self.gate.submit(batch_id, scored, version)  # every K-th batch, checked off the scoring path
        lat = scored.column("latency_ms").to_numpy() if scored.num_rows else None
        out = {
            "read": table.num_rows,
            "scored": scored.num_rows,
            "quarantined": quarantine.num_rows - duplicates,  # invalid events only
            "duplicates": duplicates,
            "by_reason": by_reason(quarantine),
            "shadowed": shadowed.num_rows,
            "explained": explained(scored),
            "p50": float(np.percentile(lat, 50)) if lat is not None else None,
            "p99": float(np.percentile(lat, 99)) if lat is not None else None,
            "driver_rows": table.num_rows,
            "t_spark": t_spark,
            "t_commit": t_commit,
        }
        return out, (lat, None)

    def _write_on_executors(self, df: Any, batch_id: int, name: str, version: str) -> tuple[dict, tuple]:
        """Tasks write the files and return metadata rows; the driver commits once per table."""
        from rtml.pipelines.tables import storage_options, table_uri

        t0 = time.monotonic()
        uris = {t: table_uri(self.settings, t) for t in TABLES}
        write = task_writer(uris, storage_options(self.settings), self.spec, self.settings.scoring, batch_id)
        files = gather(df.mapInArrow(write, META_DDL).toArrow())
        t_spark = time.monotonic() - t0
        done = [
            commit_files(
                self.settings, k, v, files.schemas[k], query_app_id(self.settings, k), batch_id, self.tables
            )
            for k, v in files.files.items()
        ]
        paths = {k: [f["path"] for f in v] for k, v in files.files.items()}
        if not all(done):  # a replayed batch id: its Kafka output is what was committed before
            paths = committed_files(self.settings, batch_id)
        t_commit = time.monotonic() - t0 - t_spark
        self.outbox.submit_files(name, paths)  # from the committed files, in bounded slices
        if self.gate.due(batch_id) and paths.get("scores"):  # the gate checks one slice of the batch
            opts, rows = storage_options(self.settings), self.settings.spark.outbox_slice_rows
            sample = next(read_slices(uris["scores"], opts, paths["scores"][:1], rows), None)
            if sample is not None:
                self.gate.submit(batch_id, sample, version)
        c = files.counts
        out = {
            "read": c.get("read", 0),
            "scored": c.get("scored", 0),
            "quarantined": files.rows("quarantine") - c.get("duplicates", 0),
            "duplicates": c.get("duplicates", 0),
            "by_reason": files.by_reason,
            "shadowed": c.get("shadowed", 0),
            "explained": c.get("explained", 0),
            "p50": files.percentile(50),
            "p99": files.percentile(99),
            "driver_rows": files.meta_rows,
            "t_spark": t_spark,
            "t_commit": t_commit,
        }
        return out, (files.latency_values, files.latency_counts)

    def summary(self) -> dict[str, Any]:
        out = {**summarise_batches(self.batches), "quality": self.gate.summary()}
        return {**out, "outbox_slice_max": self.outbox.max_rows_held}


def summarise_batches(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over per-batch records (``BatchSink.batches`` or the ``<sink>/_batches/*.json`` files)."""
    reasons: dict[str, int] = {}
    for b in batches:
        for r, n in b["by_reason"].items():
            key = r.split(":")[0]
            reasons[key] = reasons.get(key, 0) + n
    versions = sorted({b["model_version"] for b in batches if b["scored"]}, key=int)
    resets = [e for b in batches for e in b.get("offset_resets", [])]
    return {
        "batches": len(batches),
        "read": sum(b["read"] for b in batches),
        "scored": sum(b["scored"] for b in batches),
        "quarantined": sum(b["quarantined"] for b in batches),
        "duplicates": sum(b.get("duplicates", 0) for b in batches),
        "explained": sum(b.get("explained", 0) for b in batches),
        "quarantined_by_reason": dict(sorted(reasons.items())),
        "model_versions": versions,
        "offset_resets": sum(len(e["resets"]) for e in resets),
        "new_partitions": sum(len(e["new_partitions"]) for e in resets),
        "offsets_skipped": sum(e["offsets_skipped"] for e in resets),
        "sinks": sorted({b.get("sink", "driver") for b in batches}),
        "driver_rows_max": max((b.get("driver_rows_max", b["read"]) for b in batches), default=0),
    }


def read_batch_records(settings: Settings) -> list[dict[str, Any]]:
    """The per-batch records the scoring job wrote, in batch order."""
    return [json.loads(p.read_text()) for p in sorted((settings.sink_root / "_batches").glob("*.json"))]


def build_query(
    spark: Any, settings: Settings, spec: StreamSpec, sink: BatchSink, available_now: bool
) -> Any:
    from pyspark.sql import functions as F
    from pyspark.sql.streaming.state import GroupStateTimeout

    from rtml.pipelines.entity_state import STATE_SCHEMA, make_state_fn
    from rtml.pipelines.keyed_state import (
        bucket_labels,
        keyed_root,
        make_keyed_fn,
        pg_target,
        query_partitions,
        resolve_buckets,
        store_mode,
    )
    from rtml.pipelines.scorer import make_arrow_scorer, make_frame_scorer, score_ddl
    from rtml.pipelines.spark_io import read_kafka_stream
    from rtml.pipelines.validation import validate

    raw = read_kafka_stream(
        spark, settings, settings.kafka.topics.events, "earliest", settings.spark.max_events_per_trigger
    )
    events = validate(raw, spec, settings.scoring.max_event_bytes)
    # raw payloads only travel on for quarantined events; Kafka time as epoch ms for the latency
    events = events.withColumn("value", F.when(F.col("_reason").isNotNull(), F.col("value")))
    events = events.withColumn(KAFKA_MS, F.unix_millis("timestamp")).drop("key", "timestamp")
    tracking_uri, model_name = settings.tracking_uri, settings.mlflow.model_name
    top_k = settings.scoring.explain_top_k
    key = (
        settings.scoring.pseudonym_key.get_secret_value()
        if settings.scoring.pseudonymise_entities and settings.scoring.pseudonym_key
        else None
    )
    if spec.aggregates or spec.time_features:
        checkpoint = settings.checkpoint_root / "scoring"
        url = settings.scoring.state_url
        # the store, refused when the checkpoint keeps its state in another one
        store = store_mode(settings.scoring.state_store, spark.sparkContext.master, checkpoint, bool(url))
        if store == "sqlite":
            root = keyed_root(checkpoint)
        elif store == "postgres":
            root = pg_target(checkpoint, url.get_secret_value())  # type: ignore[union-attr]
        buckets = resolve_buckets(checkpoint, settings.spark.entity_buckets, store)
        bucket = F.pmod(F.hash(spec.entity_key), F.lit(buckets))
        # keyed stores: group by labels Spark's hash partitioning spreads over the shuffle partitions
        # (Spark's own store keeps its state under the bucket numbers it started with)
        labels = None
        if store != "spark":
            parts = query_partitions(checkpoint, int(spark.conf.get("spark.sql.shuffle.partitions")))
            labels = bucket_labels(buckets, parts)
        if labels is not None and labels != list(range(buckets)):
            bucket = F.element_at(F.array(*[F.lit(v) for v in labels]), bucket + 1)
        events = events.withColumn("_bucket", F.when(F.col("_reason").isNull(), bucket).otherwise(-1))
        scorer = make_frame_scorer(tracking_uri, model_name, spec, top_k)
        horizon, idle = settings.scoring.dedup_horizon_seconds, settings.scoring.state_idle_ttl_seconds
        if store != "spark":  # the state function reads the micro-batch's id from its task
            keyed = make_keyed_fn(
                spec, key, scorer, root, dedup_horizon_s=horizon, idle_ttl_s=idle, labels=labels
            )
            scored = events.groupBy("_bucket").applyInPandas(keyed, score_ddl(spec, top_k))
        else:
            scored = events.groupBy("_bucket").applyInPandasWithState(
                make_state_fn(spec, key, scorer, horizon, idle),
                score_ddl(spec, top_k),
                STATE_SCHEMA,
                "append",
                GroupStateTimeout.NoTimeout,
            )
    else:
        scored = events.mapInArrow(
            make_arrow_scorer(tracking_uri, model_name, spec, key, top_k), score_ddl(spec, top_k)
        )
    writer = (
        scored.writeStream.foreachBatch(sink)
        .outputMode("append")
        .option("checkpointLocation", str(settings.checkpoint_root / "scoring"))
    )
    writer = (
        writer.trigger(availableNow=True)
        if available_now
        else writer.trigger(processingTime=settings.spark.trigger_interval)
    )
    return writer.queryName("rtml-scoring").start()
