"""Kafka records to the source's record batch: the rows Spark's own Kafka source would give."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from rtml.pipelines.partition_reader import _batch, _from_messages, arrow_schema


@dataclass
class Message:  # the accessors of confluent_kafka.Message the reader uses
    k: bytes | None
    v: bytes | None
    o: int
    ts: tuple[int, int]
    h: list[tuple[str, bytes]] | None = None

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v

    def offset(self) -> int:
        return self.o

    def timestamp(self) -> tuple[int, int]:
        return self.ts

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self.h


UTC = dt.UTC


def _row(key, value, offset, ms, ts_type, headers=()):  # noqa: ANN001, ANN202
    stamp = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=ms)
    return {
        "key": key,
        "value": value,
        "topic": "events",
        "partition": 3,
        "offset": offset,
        "timestamp": stamp,
        "timestampType": ts_type,
        "headers": [{"key": k, "value": v} for k, v in headers],
    }


def test_messages_become_rows_as_spark_reads_kafka_with_and_without_headers() -> None:
    plain = [
        Message(b"c1", b'{"a": 1}', 10, (1, 1_796_400_000_123)),  # create time
        Message(None, b"", 11, (2, 1_796_400_000_456)),  # log append time, no key, empty value
        Message(b"c2", None, 13, (0, -1)),  # no timestamp, tombstone, an offset skipped
    ]
    rows = [
        _row(b"c1", b'{"a": 1}', 10, 1_796_400_000_123, 0),
        _row(None, b"", 11, 1_796_400_000_456, 1),
        _row(b"c2", None, 13, -1, 0),
    ]
    got = _from_messages("events", 3, plain)
    assert got.schema == arrow_schema() and got.to_pylist() == rows
    headers = [("origin", b"test"), ("n", b"2")]
    mixed = [*plain, Message(b"c3", b"x", 14, (1, 5), headers)]
    assert _from_messages("events", 3, mixed).to_pylist() == [*rows, _row(b"c3", b"x", 14, 5, 0, headers)]
    assert _from_messages("events", 3, plain[:1]).to_pylist() == rows[:1]
    # kafka-python's shape: the fields as lists, Spark's timestamp types already
    got = _batch("events", 3, [b"c3"], [b"x"], [14], [5], [0], [headers])
    assert got.to_pylist() == [_row(b"c3", b"x", 14, 5, 0, headers)]
