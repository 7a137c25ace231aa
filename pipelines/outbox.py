"""Kafka delivery of the scoring job's output, from the committed Delta batches (outbox pattern).

Batch N is handed over after it is committed to the tables and is sent in a background thread
while Spark works on batch N+1; a marker file records delivery. On start-up every committed batch
among the newest commits without a marker is sent again (read back by its ``batch_id``), so a crash
anywhere loses no Kafka output (a crash between the send and the marker can repeat one batch on the
topics: at least once there, exactly once in the tables). A batch the executors wrote
(:mod:`rtml.pipelines.executor_sink`) is read back from its committed files in bounded slices.
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
        self.max_rows_held = 0  # largest slice of an executor-written batch held while sending

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
        """Send every recently committed batch that has no delivery marker; return their names.

        Delivery is serial and a failed one stops the job, so undelivered batches are among the
        newest commits: the candidates come from the tables' logs, not from their rows.
        """
        import pyarrow as pa

        from rtml.pipelines.executor_sink import committed_files
        from rtml.pipelines.tables import DATE, read_table, recent_batch_ids

        ids = sorted(
            set(recent_batch_ids(self.settings, "scores"))
            | set(recent_batch_ids(self.settings, "quarantine"))
        )
        sent = []
        for batch_id in ids:
            name = f"batch_id={batch_id:09d}"
            if self._marker(name).exists():
                continue
            files = committed_files(self.settings, batch_id)
            if files:  # written by the tasks: read back in bounded slices
                self._deliver_files(name, files)
                sent.append(name)
                continue
            parts = []
            for kind in ("scores", "quarantine"):
                frame = read_table(self.settings, kind, f"batch_id = {int(batch_id)}")
                frame = frame.drop(columns=["batch_id", DATE], errors="ignore")
                parts.append(pa.Table.from_pandas(frame, preserve_index=False) if len(frame) else None)
            self._deliver(name, *parts)
            sent.append(name)
        return sent

    def submit_files(self, name: str, files: dict[str, list[str]]) -> None:
        """Hand over a batch the tasks wrote (committed files per table): sent from the files,
        ``spark.outbox_slice_rows`` rows at a time, so the driver never holds the whole batch."""
        self.wait()
        if not self._marker(name).exists():
            self._pending = self._pool.submit(self._deliver_files, name, files)

    def _deliver_files(self, name: str, files: dict[str, list[str]]) -> None:
        from rtml.pipelines.executor_sink import read_slices
        from rtml.pipelines.tables import storage_options, table_uri

        opts, rows = storage_options(self.settings), self.settings.spark.outbox_slice_rows
        for kind in ("scores", "quarantine"):
            for part in read_slices(table_uri(self.settings, kind), opts, files.get(kind, []), rows):
                self.max_rows_held = max(self.max_rows_held, part.num_rows)
                self._send(name, self._records(*((part, None) if kind == "scores" else (None, part))))
        self._mark(name)

    def _deliver(self, name: str, scored: Any, quarantine: Any) -> None:
        self._send(name, self._records(scored, quarantine))
        self._mark(name)

    def _records(self, scored: Any, quarantine: Any) -> list[tuple[str, bytes | None, bytes]]:
        spec, topics = self.spec, self.settings.kafka.topics
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
        return records

    def _send(self, name: str, records: list[tuple[str, bytes | None, bytes]]) -> None:
        try:  # records the broker did not accept (e.g. expired) are sent again, up to three times
            deliver(self.producer(), records)
        except DeliveryError as e:  # no marker: the batch is sent again on restart (outbox recovery)
            raise DeliveryError(f"{name}: {e}") from e

    def _mark(self, name: str) -> None:
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
