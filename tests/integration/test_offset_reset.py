"""Drill: the events topic is deleted and recreated (a broker reset does the same to the embedded,
in-memory broker) while the scoring job has a checkpoint. The real broker, Spark and MLflow.

Default: the query fails with a message naming topic, partition, checkpoint offset and log end.
``earliest``: it reads the new log, scores the new events and records the reset. ``latest``: it
skips the new log, recording how many offsets it skipped. Never a silent skip. Also: more partitions
than the checkpoint knows are read from their start and recorded; fewer fail.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
from kafka import TopicPartition

from rtml.flows.bootstrap import bootstrap
from rtml.infra.config.kafka_clients import connection_options, list_topics, make_admin, make_consumer
from rtml.infra.config.spec import load_spec
from rtml.pipelines.kafka_source import true_end_offsets
from rtml.pipelines.producer import generated_frames, stream_frames
from rtml.pipelines.score_job import run_scoring
from rtml.pipelines.scoring import read_batch_records
from tests.helpers import scoped_settings, sink_frame, wait_for

pytestmark = pytest.mark.integration


def _produce(s, n: int, seed: int) -> None:  # noqa: ANN001
    spec = load_spec()
    stream_frames(s, spec, generated_frames(spec, n, seed, None, 1000), seed=seed)


def _recreate(s, topic: str, partitions: int) -> None:  # noqa: ANN001
    """Delete the topic and create it again, empty, as rtml does (`rtml up` after a broker reset)."""
    from kafka.admin import NewTopic

    opts = connection_options(s)
    admin = make_admin(opts)
    try:
        admin.delete_topics([topic])
        wait_for(lambda: topic not in list_topics(opts), 30)
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    wait_for(lambda: topic in list_topics(opts), 30)


def _ends(s, topic: str) -> dict[int, int]:  # noqa: ANN001
    consumer = make_consumer(connection_options(s))
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        return {tp.partition: e for tp, e in true_end_offsets(consumer, tps).items()}
    finally:
        consumer.close()


def _failure(s, spec) -> str:  # noqa: ANN001
    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as err:
        run_scoring(s, spec, available_now=True)
    assert time.monotonic() - t0 < 120
    return str(err.value)


def test_topic_reset_fails_by_default_earliest_recovers_latest_skips_on_record(stack, tmp_path: Path) -> None:
    s = scoped_settings(stack, tmp_path)
    spec = load_spec()
    topic = s.kafka.topics.events
    bootstrap(s, spec, n=4000)
    _produce(s, 1200, seed=31)
    # the drill: the job is running when the topic is recreated (what a broker reset does to the
    # embedded broker, followed by `rtml up`)
    job: dict[str, object] = {}

    def run() -> None:
        try:
            job["summary"] = run_scoring(s, spec, max_seconds=240)
        except RuntimeError as exc:
            job["error"] = str(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(lambda: sum(b["read"] for b in read_batch_records(s)) == 1200, 150, lambda: str(job))
    checkpoint = _ends(s, topic)  # what the checkpoint now holds, per partition
    assert sum(checkpoint.values()) == 1200 and min(checkpoint.values()) > 300

    # the topic comes back with more partitions and fewer events than the checkpoint's offsets
    _recreate(s, topic, 3)
    _produce(s, 300, seed=32)
    log_end = _ends(s, topic)
    assert sum(log_end.values()) == 300 and all(log_end[p] < checkpoint[p] for p in (0, 1))
    t0 = time.monotonic()
    thread.join(120)
    assert not thread.is_alive() and "summary" not in job, job  # default kafka.on_offset_reset: fail
    print(f"running job failed {time.monotonic() - t0:.1f} s after the recreated topic got events")
    message = str(job["error"])  # the offset line, or, if a micro-batch fell between delete and create:
    assert "kafka.on_offset_reset" in message or f"topic '{topic}' does not exist" in message, message
    assert "\n" not in message
    assert read_batch_records(s)[-1]["read"] == 1200 == sum(b["read"] for b in read_batch_records(s))
    message = _failure(s, spec)  # a restart fails the same way, naming every partition
    for p in (0, 1):
        assert f"{topic}[{p}] checkpoint offset {checkpoint[p]} > log end {log_end[p]}" in message
    assert "kafka.on_offset_reset" in message and "\n" not in message
    assert sum(b["read"] for b in read_batch_records(s)) == 1200  # nothing was read after the reset

    s.kafka.on_offset_reset = "earliest"
    summary = run_scoring(s, spec, available_now=True)
    assert summary["read"] == 300 == summary["scored"] + summary["quarantined"]
    assert summary["offset_resets"] == 2 and summary["new_partitions"] == 1
    assert summary["offsets_skipped"] == 0  # the new log is read from its first offset
    scores = sink_frame(s, "scores")
    assert len(scores) == 1200 + summary["scored"] and scores[spec.event_id].is_unique
    record = next(b for b in read_batch_records(s) if b["offset_resets"])
    entry = record["offset_resets"][0]
    assert entry["policy"] == "earliest" and entry["new_partitions"] == [
        {"topic": topic, "partition": 2, "read_from": 0}
    ]
    got = {r["partition"]: (r["checkpoint"], r["log_end"], r["reset_to"]) for r in entry["resets"]}
    assert got == {p: (checkpoint[p], log_end[p], 0) for p in (0, 1)}
    assert run_scoring(s, spec, available_now=True)["read"] == 0  # recovered: nothing is read twice

    # fewer partitions than the checkpoint tracks: fails whatever the policy
    _recreate(s, topic, 1)
    message = _failure(s, spec)
    assert re.search(
        rf"topic '{re.escape(topic)}' has 1 partition\(s\).*partition\(s\) 1, 2 that are gone", message
    )

    # latest: the new log is skipped, and the count of skipped offsets is on record
    _recreate(s, topic, 3)
    _produce(s, 90, seed=33)
    skipped = _ends(s, topic)
    s.kafka.on_offset_reset = "latest"
    summary = run_scoring(s, spec, available_now=True)
    assert summary["read"] == 0 and summary["offsets_skipped"] == sum(skipped.values()) == 90
    assert summary["offset_resets"] == 3
    _produce(s, 40, seed=34)
    summary = run_scoring(s, spec, available_now=True)
    assert summary["read"] == 40 and summary["offset_resets"] == 0  # goes on from the reset position
    recorded = [e for b in read_batch_records(s) for e in b["offset_resets"]]
    assert [e["policy"] for e in recorded] == ["earliest", "latest"]  # each reset recorded once
    assert json.dumps(recorded).count('"skipped"') == 5


def _send_labels(s, spec, n: int, tag: str) -> None:  # noqa: ANN001
    from rtml.infra.config.kafka_clients import make_producer

    producer = make_producer(connection_options(s))
    for i in range(n):
        msg = {spec.event_id: f"{tag}-{i}", spec.label.field: i % 2, "labelled_at_ms": 1_700_000_000_000 + i}
        producer.send(s.kafka.topics.labels, json.dumps(msg).encode(), partition=i % 2)
    producer.flush()
    producer.close()


def test_label_ingest_applies_the_same_policy(stack, tmp_path: Path) -> None:
    """The labels topic has offsets of its own (``<sink>/labels/_offsets.json``): a reset there
    fails the ingest by default, and with ``earliest`` the new labels are read and the reset recorded."""
    from rtml.pipelines.labels import ingest_labels
    from rtml.pipelines.offset_reset import OffsetResetError

    s = scoped_settings(stack, tmp_path)
    spec = load_spec()
    topic = s.kafka.topics.labels
    _send_labels(s, spec, 400, "old")
    assert ingest_labels(s, spec) == {"new_labels": 400}
    _recreate(s, topic, 2)
    _send_labels(s, spec, 60, "new")
    lost = rf"{re.escape(topic)}\[0\] checkpoint offset 200 > log end 30"
    with pytest.raises(OffsetResetError, match=lost):
        ingest_labels(s, spec)
    s.kafka.on_offset_reset = "earliest"
    assert ingest_labels(s, spec) == {"new_labels": 60, "offset_resets": 2, "offsets_skipped": 0}
    assert ingest_labels(s, spec) == {"new_labels": 0}  # goes on from there, nothing twice
    s.kafka.on_offset_reset = "latest"
    _recreate(s, topic, 2)
    _send_labels(s, spec, 10, "skipped")
    assert ingest_labels(s, spec) == {"new_labels": 0, "offset_resets": 2, "offsets_skipped": 10}
    _send_labels(s, spec, 4, "after")
    assert ingest_labels(s, spec) == {"new_labels": 4}  # the reset position was kept
