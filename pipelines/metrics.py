"""Prometheus metrics of the scoring job, served over HTTP for the pager (``metrics.port``; 0 = off).

Built in the entry point (:func:`rtml.pipelines.score_job.run_scoring`) on a registry of its own, never
at import. Three feeds: every micro-batch's record (:meth:`ScoringMetrics.record_batch`, called by the
sink with the figures it writes to ``<sink>/_batches``), Spark's progress of each micro-batch (the
offsets processed, :meth:`ScoringMetrics.record_progress`) and a background probe of the events
topic's true end offsets (fetch high-water marks) every ``metrics.lag_interval_s``, which gives the
consumer lag per partition. The server binds ``metrics.host`` (127.0.0.1 by default) with
``SO_REUSEADDR``, so a job restarted by the supervisor binds the same port again at once.

The produce -> scored latency histogram takes a whole micro-batch at once (vectorised):

>>> h = BulkHistogram("x_seconds", "demo", (0.5, 1.0))
>>> h.observe_many([0.2, 0.5, 0.7, 3.0])
>>> [(s.labels["le"], s.value) for s in next(iter(h.collect())).samples if s.name.endswith("_bucket")]
[('0.5', 2.0), ('1.0', 3.0), ('+Inf', 4.0)]
>>> h.observe_many([0.7, 3.0], counts=[2, 1])  # value counts (executor-written batches)
>>> [(s.labels["le"], s.value) for s in next(iter(h.collect())).samples if s.name.endswith("_bucket")]
[('0.5', 2.0), ('1.0', 5.0), ('+Inf', 7.0)]
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from rtml.infra.config.settings import Settings

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
BATCH_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class BulkHistogram(Collector):
    """A Prometheus histogram fed a whole array per call (numpy), not one observation at a time."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        import numpy as np

        self.name, self.documentation = name, documentation
        self.edges = np.asarray(sorted(buckets), dtype=float)
        self.counts = np.zeros(len(self.edges) + 1, dtype=np.int64)  # last: above every edge
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: Any, counts: Any = None) -> None:
        """Observe ``values`` (each ``counts`` times, when given: value counts of a micro-batch)."""
        import numpy as np

        v = np.asarray(values, dtype=float)
        if v.size == 0:
            return
        w = None if counts is None else np.asarray(counts, dtype=float)
        idx = np.searchsorted(self.edges, v, side="left")
        per_bucket = np.bincount(idx, weights=w, minlength=len(self.counts)).astype(np.int64)
        with self._lock:
            self.counts += per_bucket
            self.sum += float(v.sum() if w is None else (v * w).sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative = self.counts.cumsum().tolist()
            total = self.sum
        buckets = [(str(float(e)), float(c)) for e, c in zip(self.edges, cumulative, strict=False)]
        buckets.append(("+Inf", float(cumulative[-1])))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


def end_offsets_of(progress: dict[str, Any]) -> dict[str, dict[str, int]] | None:
    """The offsets a micro-batch processed up to, from Spark's progress (``{topic: {partition: n}}``)."""
    end = (progress.get("sources") or [{}])[0].get("endOffset")
    if isinstance(end, str):  # Python data sources report their offsets as a JSON string
        try:
            end = json.loads(end)
        except ValueError:
            return None
    return end if isinstance(end, dict) else None


class ScoringMetrics:
    """The scoring job's metrics on a registry of its own; :meth:`serve` exposes them over HTTP."""

    def __init__(self, settings: Settings) -> None:
        from prometheus_client import ProcessCollector

        self.settings = settings
        self.topic = settings.kafka.topics.events
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)  # process_* (CPU, memory, start time) of the job's driver
        self.read = Counter("rtml_events_read", "Events read from the events topic.", registry=r)
        self.scored = Counter("rtml_events_scored", "Events scored by the champion.", registry=r)
        self.quarantined = Counter(
            "rtml_events_quarantined",
            "Invalid events quarantined, by reason family and field.",
            ["reason", "field"],
            registry=r,
        )
        self.duplicates = Counter(
            "rtml_events_duplicates", "Duplicate events dropped (repeated event ids).", registry=r
        )
        self.batch_seconds = Histogram(
            "rtml_batch_duration_seconds",
            "Wall time of a micro-batch: Spark job, Parquet sinks, hand-off to Kafka.",
            buckets=BATCH_BUCKETS_S,
            registry=r,
        )
        self.latency = BulkHistogram(
            "rtml_produce_to_scored_latency_seconds",
            "Kafka record timestamp to scored, per scored event.",
            LATENCY_BUCKETS_S,
        )
        r.register(self.latency)
        self.lag = Gauge(
            "rtml_consumer_lag_events",
            "Events on the events topic not yet processed, per partition (true end offset - processed).",
            ["topic", "partition"],
            registry=r,
        )
        self.lag_failures = Counter(
            "rtml_consumer_lag_probe_failures", "Lag probes that could not read the end offsets.", registry=r
        )
        self.model_version = Gauge(
            "rtml_model_version",
            "Registered model version serving each role (champion; shadow when one runs).",
            ["model", "role"],
            registry=r,
        )
        self.last_batch = Gauge(
            "rtml_last_batch_timestamp_seconds",
            "Unix time the last successful micro-batch ended (0 before the first).",
            registry=r,
        )
        self.offset_resets = Counter(
            "rtml_kafka_offset_resets",
            "Partitions moved off the checkpoint because the log no longer held its offset "
            "(kafka.on_offset_reset earliest | latest).",
            ["topic", "partition", "policy"],
            registry=r,
        )
        self.offsets_skipped = Counter(
            "rtml_kafka_offsets_skipped",
            "Offsets an offset reset will never read (see the batch records' offset_resets).",
            ["topic", "partition"],
            registry=r,
        )
        self._roles: set[str] = set()
        self.processed: dict[int, int] = {}  # partition -> offset processed up to
        self.ends: dict[int, int] | None = None
        self._lag_parts: set[int] = set()  # partitions with a lag series
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: Any = None
        self._probe: threading.Thread | None = None

    # feeds ------------------------------------------------------------------------------------------
    def set_version(self, role: str, version: str | None) -> None:
        """The version serving ``role`` (champion | shadow); None removes the series (no such model)."""
        labels = (self.settings.mlflow.model_name, role)
        if version is None:
            if role in self._roles:
                self.model_version.remove(*labels)
                self._roles.discard(role)
            return
        self.model_version.labels(*labels).set(float(version))
        self._roles.add(role)

    def record_batch(self, stats: dict[str, Any], latency_ms: Any = None, counts: Any = None) -> None:
        """One micro-batch's record (``BatchSink`` stats) and its scored events' latencies (ms; as value
        counts when ``counts`` is given)."""
        self.read.inc(stats["read"])
        self.scored.inc(stats["scored"])
        for reason, n in stats["by_reason"].items():
            family, _, field = reason.partition(":")
            self.quarantined.labels(family, field).inc(n)
        self.duplicates.inc(stats.get("duplicates", 0))
        self.batch_seconds.observe(stats["seconds"])
        if latency_ms is not None:
            self.latency.observe_many(latency_ms / 1000.0, counts)
        for entry in stats.get("offset_resets", ()):
            for reset in entry["resets"]:
                labels = (reset["topic"], str(reset["partition"]))
                self.offset_resets.labels(*labels, entry["policy"]).inc()
                self.offsets_skipped.labels(*labels).inc(reset["skipped"])
        self.set_version("champion", stats["model_version"])
        self.last_batch.set(stats["ended_at_ms"] / 1000.0)

    def record_progress(self, progress: dict[str, Any]) -> None:
        """Spark's progress of a micro-batch: the offsets it processed up to."""
        end = end_offsets_of(progress)
        if end and self.topic in end:
            with self._lock:
                self.processed = {int(p): int(o) for p, o in end[self.topic].items()}
            self._update_lag()

    # consumer lag -----------------------------------------------------------------------------------
    def _update_lag(self) -> None:
        with self._lock:  # called from the lag probe's thread and from the job's loop
            if self.ends is None:
                return
            for p, end in self.ends.items():
                self.lag.labels(self.topic, str(p)).set(max(0, end - self.processed.get(p, 0)))
            for p in self._lag_parts - set(self.ends):  # a partition gone (topic recreated): no stale figure
                self.lag.remove(self.topic, str(p))
            self._lag_parts = set(self.ends)

    def probe_lag(self, consumer: Any) -> None:
        """Read the topic's true end offsets (fetch high-water marks) and update the lag per partition."""
        from kafka import TopicPartition

        from rtml.pipelines.kafka_source import true_end_offsets

        parts = consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        ends = true_end_offsets(consumer, tps) if tps else {}
        with self._lock:
            self.ends = {tp.partition: int(e) for tp, e in ends.items()}
        self._update_lag()

    def _probe_loop(self) -> None:
        from rtml.infra.config.kafka_clients import connection_options, make_consumer

        consumer, failing = None, False
        try:
            while True:
                try:
                    consumer = consumer or make_consumer(connection_options(self.settings))
                    self.probe_lag(consumer)
                    failing = False
                except Exception as exc:  # noqa: BLE001 - a monitoring probe never stops scoring
                    self.lag_failures.inc()
                    if not failing:
                        log.warning("consumer lag probe failed: %s: %s", type(exc).__name__, exc)
                    failing = True
                    if consumer is not None:
                        consumer.close()
                        consumer = None
                if self._stop.wait(self.settings.metrics.lag_interval_s):
                    return
        finally:
            if consumer is not None:
                consumer.close()

    # serving ----------------------------------------------------------------------------------------
    def serve(self) -> None:
        """Listen on ``metrics.host:metrics.port``; RuntimeError with a one-line reason if it cannot."""
        from prometheus_client import start_http_server

        m = self.settings.metrics
        try:
            self._server, _ = start_http_server(m.port, addr=m.host, registry=self.registry)
        except OSError as exc:
            raise RuntimeError(
                f"metrics: cannot listen on {m.host}:{m.port} ({exc.strerror or exc}): "
                "set metrics.port to a free port, or 0 to turn metrics off"
            ) from None

    def start_lag_probe(self) -> None:
        """Measure the consumer lag every ``metrics.lag_interval_s`` in a background thread."""
        self._probe = threading.Thread(target=self._probe_loop, name="rtml-lag-probe", daemon=True)
        self._probe.start()

    def close(self) -> None:
        """Stop the lag probe and the HTTP server (the port is free again on return)."""
        self._stop.set()
        if self._probe is not None:
            self._probe.join(timeout=30)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def start_metrics(settings: Settings, champion: str | None = None) -> ScoringMetrics | None:
    """The job's metrics, served; None when ``metrics.port`` is 0 (off)."""
    if not settings.metrics.port:
        return None
    from rtml.pipelines.score_job import PROGRESS_FILE

    metrics = ScoringMetrics(settings)
    metrics.set_version("champion", champion)
    try:  # offsets the last run processed: the lag until this run's first micro-batch completes
        previous = json.loads((settings.sink_root / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        previous = None  # first run: nothing processed yet
    if isinstance(previous, dict):
        metrics.record_progress({"sources": [{"endOffset": previous.get("end_offset")}]})
    metrics.serve()
    metrics.start_lag_probe()
    return metrics
