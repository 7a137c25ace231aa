"""Writing to Kafka from Spark through rtml's Python data source (format ``rtml_kafka``).

Rows with columns value [, key, topic, partition, headers] are sent by the bulk producer of the
``ioClient`` option (:mod:`rtml.pipelines.bulk_producer`), which reports and sends again what the
broker did not accept.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyspark.sql.datasource import DataSourceArrowWriter, DataSourceStreamArrowWriter, WriterCommitMessage


def _options(options: dict[str, str]) -> tuple[dict[str, Any], str | None, str]:
    """Connection, default topic and client from the writer's options."""
    from rtml.pipelines.kafka_source import _lower, connection_from_options

    low = _lower(options)
    return connection_from_options(options), low.get("topic"), low.get("ioclient", "librdkafka")


@dataclass
class Written(WriterCommitMessage):
    rows: int


def produce_arrow(
    conn: dict[str, Any], default_topic: str | None, batches: Iterator[Any], client: str
) -> int:
    """Send rows with columns value [, key, topic, partition, headers] to Kafka; return the count.

    Raises :class:`~rtml.pipelines.bulk_producer.DeliveryError` if records are not accepted after retries.
    """
    from rtml.pipelines.bulk_producer import deliver, make_bulk_producer

    producer = make_bulk_producer(conn, client)
    n = 0
    try:
        for batch in batches:
            cols = batch.to_pydict()
            values = cols["value"]
            none = [None] * len(values)
            topics = cols.get("topic") or [default_topic] * len(values)
            records = [
                (
                    t or default_topic,
                    k.encode() if isinstance(k, str) else k,
                    v.encode() if isinstance(v, str) else v,
                    part,
                    [(x["key"], x["value"]) for x in h] if h else None,
                )
                for v, k, t, part, h in zip(
                    values,
                    cols.get("key") or none,
                    topics,
                    cols.get("partition") or none,
                    cols.get("headers") or none,
                    strict=True,
                )
            ]
            deliver(producer, records)
            n += len(values)
    finally:
        producer.close()
    return n


class KafkaBatchWriter(DataSourceArrowWriter):
    def __init__(self, options: dict[str, str]) -> None:
        self.conn, self.topic, self.client = _options(options)

    def write(self, iterator: Iterator[Any]) -> Written:
        return Written(produce_arrow(self.conn, self.topic, iterator, self.client))


class KafkaStreamWriter(DataSourceStreamArrowWriter):
    def __init__(self, options: dict[str, str]) -> None:
        self.conn, self.topic, self.client = _options(options)

    def write(self, iterator: Iterator[Any]) -> Written:
        return Written(produce_arrow(self.conn, self.topic, iterator, self.client))

    def commit(self, messages: list, batchId: int) -> None:  # noqa: N803 - Spark's name
        pass

    def abort(self, messages: list, batchId: int) -> None:  # noqa: N803
        pass
