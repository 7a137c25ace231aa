"""Kafka delivery of the scoring job's output, from the durable Parquet batches (outbox pattern).

Batch N is handed over after its Parquet files are written and is sent in a background thread
while Spark works on batch N+1; a marker file records delivery. On start-up every Parquet batch
without a marker is sent again, so a crash anywhere loses no Kafka output (a crash between the
send and the marker can repeat one batch on the topics: at least once there, exactly once in
Parquet).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec
from rtml.pipelines.bulk_producer import BulkProducer, DeliveryError, deliver, make_bulk_producer
from rtml.pipelines.explanations import explain_top_k_of, with_explanations
from rtml.pipelines.scorer import KAFKA_MS


class KafkaOutbox:
    def __init__(self, settings: Settings, spec: StreamSpec) -> None:
        self.settings = settings
        self.spec = spec
        self.root = settings.sink_root
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtml-outbox")
        self._pending: Future | None = None
        self._producer: BulkProducer | None = None

    def _marker(self, name: str) -> Path:
        return self.root / "_kafka_delivered" / name

    def producer(self) -> BulkProducer:
        if self._producer is None:
            from rtml.infra.config.kafka_clients import connection_options

            opts = connection_options(self.settings)
            self._producer = make_bulk_producer(opts, self.settings.kafka.io_client)
        return self._producer

    def wait(self) -> None:
        """Block until the previous hand-over is delivered; re-raise its failure."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def submit(self, name: str, scored: Any, quarantine: Any) -> None:
        self.wait()
        if not self._marker(name).exists():
            self._pending = self._pool.submit(self._deliver, name, scored, quarantine)

    def recover(self) -> list[str]:
        """Send every Parquet batch that has no delivery marker; return their names."""
        import pyarrow.parquet as pq

        sent = []
        for kind in ("scores", "quarantine"):
            base = self.root / kind
            for d in sorted(base.glob("batch_id=*")) if base.exists() else []:
                if self._marker(d.name).exists() or d.name in sent:
                    continue
                scores_dir, q_dir = self.root / "scores" / d.name, self.root / "quarantine" / d.name
                scored = pq.read_table(scores_dir) if scores_dir.exists() else None
                quarantine = pq.read_table(q_dir) if q_dir.exists() else None
                self._deliver(d.name, scored, quarantine)
                sent.append(d.name)
        return sent

    def _deliver(self, name: str, scored: Any, quarantine: Any) -> None:
        spec, topics, producer = self.spec, self.settings.kafka.topics, self.producer()
        cols = [spec.event_id, spec.event_time, "score", "decision", "model_version", "scored_at_ms"]
        records: list[tuple[str, bytes | None, bytes]] = []
        if scored is not None and scored.num_rows:
            frame = scored.select(cols).to_pandas()
            values = frame.to_json(orient="records", lines=True).splitlines()
            k = explain_top_k_of(scored.column_names)
            if k:  # a compact {feature: contribution} of the top k
                values = with_explanations(values, scored, k)
            for key, value in zip(frame[spec.event_id], values, strict=True):
                records.append((topics.scores, key.encode(), value.encode()))
        if quarantine is not None and quarantine.num_rows:
            qframe = quarantine.drop_columns([KAFKA_MS]).to_pandas()
            for value in qframe.to_json(orient="records", lines=True).splitlines():
                records.append((topics.quarantine, None, value.encode()))
        try:  # records the broker did not accept (e.g. expired) are sent again, up to three times
            deliver(producer, records)
        except DeliveryError as e:  # no marker: the batch is sent again on restart (outbox recovery)
            raise DeliveryError(f"{name}: {e}") from e
        marker = self._marker(name)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
            if self._producer is not None:
                self._producer.close()
                self._producer = None
