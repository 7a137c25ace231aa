"""The offset-reset policy of the Kafka source: pure logic (the drill itself runs on the real broker
and Spark in tests/integration/test_offset_reset.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtml.pipelines.kafka_source import _apply_row_limit
from rtml.pipelines.offset_reset import (
    OffsetResetError,
    for_batch,
    mark_taken,
    pending,
    plan,
    read_from,
    record,
)

E0, E1, E2 = ("ev", 0), ("ev", 1), ("ev", 2)


def test_offsets_the_log_holds_are_kept() -> None:
    positions, resets, new = plan({E0: 10, E1: 0}, {E0: 0, E1: 0}, {E0: 10, E1: 5}, "fail")
    assert positions == {E0: 10, E1: 0} and resets == [] and new == []


@pytest.mark.parametrize(
    ("policy", "to", "skipped"),
    [("earliest", 3, 3), ("latest", 50, 50)],  # a recreated log is counted from its offset 0
)
def test_log_end_below_checkpoint(policy: str, to: int, skipped: int) -> None:
    positions, resets, _ = plan({E0: 80}, {E0: 3}, {E0: 50}, policy)
    assert positions == {E0: to}
    (r,) = resets
    assert (r.checkpoint, r.log_start, r.log_end, r.reset_to, r.skipped) == (80, 3, 50, to, skipped)
    assert r.cause == "log_end_below_checkpoint"


@pytest.mark.parametrize(("policy", "to", "skipped"), [("earliest", 30, 20), ("latest", 90, 80)])
def test_retention_above_checkpoint(policy: str, to: int, skipped: int) -> None:
    positions, (r,), _ = plan({E0: 10}, {E0: 30}, {E0: 90}, policy)
    assert positions == {E0: to} and (r.reset_to, r.skipped, r.cause) == (
        to,
        skipped,
        "log_start_above_checkpoint",
    )


def test_fail_names_every_partition_with_checkpoint_and_log_end() -> None:
    with pytest.raises(OffsetResetError) as err:
        plan({E0: 8758, E1: 9142}, {E0: 0, E1: 0}, {E0: 5825, E1: 5958}, "fail")
    text = str(err.value)
    assert "ev[0] checkpoint offset 8758 > log end 5825" in text
    assert "ev[1] checkpoint offset 9142 > log end 5958" in text
    assert "\n" not in text and "kafka.on_offset_reset" in text


def test_new_partitions_read_from_their_start_and_lost_ones_fail() -> None:
    positions, resets, new = plan({E0: 5, E1: 5}, {E0: 0, E1: 0, E2: 4}, {E0: 9, E1: 9, E2: 7}, "fail")
    assert positions == {E0: 5, E1: 5, E2: 4} and resets == [] and new == [E2]
    for policy in ("fail", "earliest", "latest"):
        with pytest.raises(
            OffsetResetError, match=r"has 1 partition\(s\).*partition\(s\) 1, 2 that are gone"
        ):
            plan({E0: 5, E1: 5, E2: 5}, {E0: 0}, {E0: 9}, policy)


def test_a_replanned_batch_reads_what_was_planned() -> None:
    # planned: E0 reset (end below start), E1 past retention, E2 new, and a plain one
    start = {E0: 80, E1: 10, ("ev", 3): 4}
    end = {E0: 20, E1: 40, E2: 6, ("ev", 3): 9}
    lo = {E0: 0, E1: 30, E2: 2, ("ev", 3): 0}
    positions, resets = read_from(start, end, lo, "earliest")
    assert positions == {E0: 0, E1: 30, E2: 2, ("ev", 3): 4}
    assert [(r.partition, r.skipped) for r in resets] == [(0, 0), (1, 20)]
    assert read_from(start, end, lo, "latest")[0] == {E0: 20, E1: 40, E2: 2, ("ev", 3): 4}
    with pytest.raises(OffsetResetError):
        read_from(start, end, lo, "fail")


def test_row_limit_counts_from_the_reset_position() -> None:
    positions, _, _ = plan({E0: 800, E1: 10}, {E0: 0, E1: 0}, {E0: 500, E1: 510}, "earliest")
    ends = _apply_row_limit(positions, {E0: 500, E1: 510}, 100)
    assert sum(ends[k] - positions[k] for k in ends) == 100 and ends[E0] < 800  # still reads as a reset


def test_a_reset_is_recorded_once_and_taken_by_one_batch_record(tmp_path: Path) -> None:
    d = tmp_path / "resets"
    start = {"ev": {"0": 80}}
    _, resets, _ = plan({E0: 80}, {E0: 0}, {E0: 50}, "earliest")
    first = record(d, start, "earliest", resets, [E1], {E0: 0, E1: 0})
    again = record(d, start, "earliest", resets, [E1], {E0: 0, E1: 0})  # replanned after a crash
    assert first is not None and again is not None and first["id"] == again["id"]
    assert len(pending(d)) == 1 and first["offsets_skipped"] == 0
    assert record(d, start, "earliest", [], [], {}) is None

    batch = tmp_path / "batch_id=000000003.json"
    taken = for_batch(d, batch)
    assert [e["id"] for e in taken] == [first["id"]]
    batch.write_text(json.dumps({"offset_resets": taken}))
    mark_taken(d, taken)
    assert pending(d) == [] and for_batch(d, tmp_path / "next.json") == []
    assert [e["id"] for e in for_batch(d, batch)] == [first["id"]]  # a replayed batch keeps its own


def test_setting_defaults_to_fail_and_refuses_what_it_cannot_do() -> None:
    from rtml.infra.config.settings import ConfigError, load_settings

    assert load_settings(use_default_file=False).kafka.on_offset_reset == "fail"
    with pytest.raises(ConfigError, match=r"kafka\.on_offset_reset: Input should be 'fail'"):
        load_settings(use_default_file=False, overrides={"kafka": {"on_offset_reset": "skip"}})
    with pytest.raises(ConfigError, match="needs connector 'python'"):
        load_settings(
            use_default_file=False, overrides={"kafka": {"on_offset_reset": "latest", "connector": "native"}}
        )


def test_a_failed_query_is_reported_by_the_sources_own_line() -> None:
    from rtml.pipelines.score_job import failure_line

    spark_text = (
        "[PYTHON_STREAMING_DATA_SOURCE_RUNTIME_ERROR] Failed when Python streaming data source "
        "perform latestOffset: Traceback (most recent call last):\n  File ...\n"
        "rtml.pipelines.offset_reset.OffsetResetError: the Kafka log no longer holds the checkpoint's "
        "offsets (kafka.on_offset_reset: fail): e[0] checkpoint offset 80 > log end 50 (log start 0)\n"
        "\tat org.apache.spark..."
    )
    line = failure_line(spark_text)
    assert line.startswith("the Kafka log no longer holds") and line.endswith("(log start 0)")
    assert failure_line("plain error\nmore") == "plain error"


def test_a_chained_error_is_reported_by_the_one_raised() -> None:
    from rtml.pipelines.score_job import failure_line

    text = (
        "[FOREACH_BATCH_USER_FUNCTION_ERROR] ... Traceback (most recent call last):\n"
        "rtml.pipelines.outbox.KafkaSendError: timed out\n\n"
        "The above exception was the direct cause of the following exception:\n\n"
        "Traceback (most recent call last):\n"
        "rtml.pipelines.outbox.DeliveryError: batch_id=000000007: 3 of 10 records not delivered\n"
        "\tat org.apache.spark..."
    )
    assert failure_line(text) == "batch_id=000000007: 3 of 10 records not delivered"
