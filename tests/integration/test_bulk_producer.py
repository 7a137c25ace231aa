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


def test_records_failing_after_they_were_sent_come_back_as_given(stack, tmp_path: Path) -> None:
    """Delivery reports (only failures are reported) name each failed record, keyed or pinned."""
    from rtml.pipelines.bulk_producer import LibrdkafkaProducer

    s = scoped_settings(stack, tmp_path)
    good, missing = s.kafka.topics.scores, f"rtml-missing-{tmp_path.name}"  # never created
    records = [(good, f"k{i}".encode(), b"ok") for i in range(200)]
    lost = [(missing, f"m{i}".encode(), f"lost {i}".encode()) for i in range(50)]
    lost += [(missing, None, b"unkeyed"), (missing, b"p", b"pinned", 0, [("h", b"1")])]
    # the missing topic's records fail once its metadata is given up on (librdkafka's default: 30 s)
    producer = LibrdkafkaProducer(connection_options(s), {"topic.metadata.propagation.max.ms": 2000})
    try:
        failed = producer.send_all(records[:100] + lost + records[100:])
    finally:
        producer.close()
    assert sorted(map(repr, (r for r, _ in failed))) == sorted(map(repr, lost))
    assert all("unknown topic" in err.lower() for _, err in failed), failed[0][1]
    assert sorted(r.key for r in read_topic(s, good)) == sorted(r[1] for r in records)
