"""One Kafka partition's offset range [start, end) as Arrow record batches, inside a Spark task.

Rows look like Spark's own Kafka source. Two clients, by the ``kafka.io_client`` setting:
``librdkafka`` (confluent-kafka, default) decodes in C: ≈1–3 µs per record measured here, against
≈10–12 µs for ``kafka-python``'s pure-Python decoding. Either way one consumer per partition per
Python worker is kept across micro-batches (Spark reuses workers): a micro-batch usually starts
where the previous one stopped, so records prefetched then are used, not fetched again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

IDLE_TIMEOUT_S = 60


def arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("key", pa.binary()),
            ("value", pa.binary()),
            ("topic", pa.string()),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
            ("timestamp", pa.timestamp("us", tz="UTC")),
            ("timestampType", pa.int32()),
            ("headers", pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))),
        ]
    )


def _batch(topic: str, partition: int, keys, values, offsets, ts_ms, ts_types, headers) -> Any:  # noqa: ANN001
    """One partition's records as a record batch, from one sequence per field (``headers``: each
    record's (key, value) pairs, or None). Topic, partition, timestamps and the usual empty headers
    are filled by Arrow and NumPy, not per record."""
    import numpy as np
    import pyarrow as pa

    schema = arrow_schema()
    n = len(offsets)
    header_type = schema.field("headers").type
    if any(headers):
        hs = pa.array([[{"key": k, "value": v} for k, v in (h or [])] for h in headers], header_type)
    else:  # an empty list per record
        hs = pa.ListArray.from_arrays(
            pa.array(np.zeros(n + 1, np.int32)), pa.array([], header_type.value_type)
        )
    return pa.RecordBatch.from_arrays(
        [
            pa.array(keys, pa.binary()),
            pa.array(values, pa.binary()),
            pa.repeat(pa.scalar(topic, pa.string()), n),
            pa.repeat(pa.scalar(partition, pa.int32()), n),
            pa.array(offsets, pa.int64()),
            pa.array(np.asarray(ts_ms, np.int64) * 1000, pa.timestamp("us", tz="UTC")),
            pa.array(np.asarray(ts_types, np.int32), pa.int32()),
            hs,
        ],
        schema=schema,
    )


def _from_messages(topic: str, partition: int, recs: list[Any]) -> Any:
    """librdkafka's messages as one record batch, one pass per field the client exposes."""
    import numpy as np

    stamps = np.array([m.timestamp() for m in recs], dtype=np.int64).reshape(len(recs), 2)  # (type, ms)
    return _batch(
        topic,
        partition,
        [m.key() for m in recs],
        [m.value() for m in recs],
        [m.offset() for m in recs],
        stamps[:, 1],
        np.maximum(stamps[:, 0] - 1, 0),  # librdkafka 1 create / 2 log append -> Spark 0 / 1
        [m.headers() for m in recs],
    )


class _KafkaPythonReader:
    def __init__(self, conn: dict[str, Any], topic: str, partition: int) -> None:
        from kafka import TopicPartition

        from rtml.infra.config.kafka_clients import make_reader_consumer

        self.tp = TopicPartition(topic, partition)
        self.consumer = make_reader_consumer(conn)
        self.consumer.assign([self.tp])
        # a position to compare with: with auto_offset_reset 'none' an unset one raises
        self.consumer.seek(self.tp, 0)

    def read(self, start: int, end: int, chunk: int) -> Iterator[Any]:
        tp, consumer = self.tp, self.consumer
        if consumer.position(tp) != start:
            consumer.seek(tp, start)
        pos, deadline = start, time.monotonic() + IDLE_TIMEOUT_S
        while pos < end:
            recs = consumer.poll(timeout_ms=500, max_records=min(chunk, end - pos)).get(tp, [])
            recs = [r for r in recs if r.offset < end]
            if not recs:
                pos = max(pos, consumer.position(tp))
                _check_idle(deadline, tp.topic, tp.partition, pos, end)
                continue
            deadline = time.monotonic() + IDLE_TIMEOUT_S
            pos = recs[-1].offset + 1
            yield _batch(
                tp.topic,
                tp.partition,
                [r.key for r in recs],
                [r.value for r in recs],
                [r.offset for r in recs],
                [r.timestamp for r in recs],
                [max(r.timestamp_type, 0) for r in recs],
                [r.headers for r in recs],
            )

    def close(self) -> None:
        self.consumer.close()


class _LibrdkafkaReader:
    def __init__(self, conn: dict[str, Any], topic: str, partition: int) -> None:
        from confluent_kafka import Consumer

        from rtml.pipelines.librdkafka import consumer_config, logger

        self.topic, self.partition = topic, partition
        self.consumer = Consumer({**consumer_config(conn), "logger": logger()})
        self.position: int | None = None  # offset after the last record consumed

    def read(self, start: int, end: int, chunk: int) -> Iterator[Any]:
        from confluent_kafka import KafkaException, TopicPartition

        if self.position != start:  # (re)start fetching at `start`
            self.consumer.assign([TopicPartition(self.topic, self.partition, start)])
            self.position = start
        pos, deadline = start, time.monotonic() + IDLE_TIMEOUT_S
        while pos < end:
            msgs = self.consumer.consume(num_messages=min(chunk, end - pos), timeout=0.5)
            for m in msgs:
                if m.error() is not None:
                    raise KafkaException(m.error())
            if msgs:
                self.position = msgs[-1].offset() + 1
            recs = msgs if not msgs or msgs[-1].offset() < end else [m for m in msgs if m.offset() < end]
            if not recs:
                _check_idle(deadline, self.topic, self.partition, pos, end)
                continue
            deadline = time.monotonic() + IDLE_TIMEOUT_S
            pos = recs[-1].offset() + 1
            yield _from_messages(self.topic, self.partition, recs)

    def close(self) -> None:
        self.consumer.close()


def _check_idle(deadline: float, topic: str, partition: int, pos: int, end: int) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(f"{topic}[{partition}]: no data between {pos} and {end} for {IDLE_TIMEOUT_S}s")


_READERS: dict[tuple[str, str, str, int], Any] = {}


def read_partition(
    conn: dict[str, Any], topic: str, partition: int, start: int, end: int, client: str, chunk: int = 20_000
) -> Iterator[Any]:
    """Records [start, end) of one partition, in Arrow record batches of at most ``chunk`` rows."""
    key = (client, json.dumps(conn, sort_keys=True, default=str), topic, partition)
    reader = _READERS.get(key)
    if reader is None:
        from rtml.infra.config.kafka_clients import check_io_client

        cls = _LibrdkafkaReader if check_io_client(client) == "librdkafka" else _KafkaPythonReader
        reader = _READERS[key] = cls(conn, topic, partition)
    try:
        yield from reader.read(start, end, chunk)
    except BaseException:  # a failed or abandoned read leaves the consumer's position unknown
        _READERS.pop(key, None)
        reader.close()
        raise
