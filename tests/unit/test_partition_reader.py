"""librdkafka messages to the source's record batch: the same rows as the per-field builder."""

from __future__ import annotations

from dataclasses import dataclass

from rtml.pipelines.partition_reader import _batch, _from_messages


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


def _reference(recs: list[Message]):  # noqa: ANN202
    return _batch(
        "events",
        3,
        [m.key() for m in recs],
        [m.value() for m in recs],
        [m.offset() for m in recs],
        [m.timestamp()[1] for m in recs],
        [max(m.timestamp()[0] - 1, 0) for m in recs],
        [[{"key": k, "value": v} for k, v in (m.headers() or [])] for m in recs],
    )


def test_messages_become_the_same_rows_with_and_without_headers() -> None:
    plain = [
        Message(b"c1", b'{"a": 1}', 10, (1, 1_796_400_000_123)),  # create time
        Message(None, b"", 11, (2, 1_796_400_000_456)),  # log append time, no key, empty value
        Message(b"c2", None, 13, (0, -1)),  # no timestamp, tombstone, an offset skipped
    ]
    got = _from_messages("events", 3, plain)
    assert got.equals(_reference(plain))
    assert got.column("timestampType").to_pylist() == [0, 1, 0]
    assert got.column("headers").to_pylist() == [[], [], []]
    mixed = [*plain, Message(b"c3", b"x", 14, (1, 5), [("origin", b"test"), ("n", b"2")])]
    got = _from_messages("events", 3, mixed)
    assert got.equals(_reference(mixed))
    assert got.column("headers").to_pylist()[3] == [
        {"key": "origin", "value": b"test"},
        {"key": "n", "value": b"2"},
    ]
    assert _from_messages("events", 3, plain[:1]).num_rows == 1
