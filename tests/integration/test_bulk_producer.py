"""Bulk output to the real broker: every record once, same partition per key for both clients, and
records the broker refuses come back by name (never silently lost)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtml.infra.config.kafka_clients import connection_options
from rtml.pipelines.bulk_producer import DeliveryError, deliver, make_bulk_producer
from tests.helpers import read_topic, scoped_settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("client", ["librdkafka", "kafka-python"])
def test_every_record_delivered_once_with_keys_headers_and_partitions(stack, tmp_path: Path, client) -> None:  # noqa: ANN001
    s = scoped_settings(stack, tmp_path)
    topic = s.kafka.topics.scores
    records = [(topic, f"k{i}".encode(), f'{{"i": {i}}}'.encode()) for i in range(3000)]
    records.append((topic, None, b'{"pinned": 1}', 1, [("origin", b"test")]))
    producer = make_bulk_producer(connection_options(s), client)
    try:
        assert producer.send_all(records) == []
    finally:
        producer.close()
    got = read_topic(s, topic)
    assert sorted(r.value for r in got) == sorted(r[2] for r in records)  # each exactly once
    pinned = [r for r in got if r.value == b'{"pinned": 1}'][0]
    assert pinned.partition == 1 and [(h[0], h[1]) for h in pinned.headers] == [("origin", b"test")]
    # murmur2 partitioning, as Java clients: a key lands on the partition kafka-python would choose
    from kafka.partitioner.default import murmur2

    parts = s.kafka.partitions
    keyed = [r for r in got if r.key is not None]
    assert all(r.partition == (murmur2(r.key) & 0x7FFFFFFF) % parts for r in keyed)
    assert {r.partition for r in keyed} == set(range(parts))


def test_refused_records_are_named_and_the_rest_delivered(stack, tmp_path: Path) -> None:
    s = scoped_settings(stack, tmp_path)
    topic = s.kafka.topics.quarantine
    big = (topic, b"big", b"x" * (5 << 20))  # over the 4 MiB message limit
    records = [(topic, f"k{i}".encode(), b"ok") for i in range(100)] + [big]
    producer = make_bulk_producer(connection_options(s), "librdkafka")
    try:
        failed = producer.send_all(records)
        assert [r for r, _ in failed] == [big] and "size" in failed[0][1].lower()
        with pytest.raises(DeliveryError, match="1 of 1 records not delivered"):
            deliver(producer, [big])
    finally:
        producer.close()
    assert sorted(r.key for r in read_topic(s, topic)) == sorted(f"k{i}".encode() for i in range(100))
