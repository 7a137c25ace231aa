"""When the scoring job stops Spark's data source planning processes (pure logic; the processes
themselves: tests/integration/test_spark_launch.py and test_scoring.py)."""

from __future__ import annotations

import pytest

from rtml.pipelines import planner_daemons
from rtml.pipelines.planner_daemons import AT_START, READ, PlannerStops, stop_planners


def test_lookup_and_creation_at_the_first_batch_the_read_once_a_batch_read_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[frozenset[str]] = []
    monkeypatch.setattr(planner_daemons, "stop_planners", lambda spark, modules: calls.append(modules))
    stops = PlannerStops()
    stops.before_batch("spark")
    stops.after_read("spark", 0)  # nothing read: Spark has not planned the read yet
    assert calls == [AT_START]
    stops.before_batch("spark")
    stops.after_read("spark", 1200)
    stops.before_batch("spark")
    stops.after_read("spark", 1200)
    assert calls == [AT_START, READ]  # each kind once


def test_a_session_without_spark_internals_keeps_its_processes_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Connect:  # e.g. Spark Connect: no SparkContext in this process
        @property
        def sparkContext(self) -> None:  # noqa: N802 - pyspark's name
            raise RuntimeError("[JVM_ATTRIBUTE_NOT_SUPPORTED] sparkContext is not supported")

    with caplog.at_level("INFO", logger="rtml.spark"):
        assert stop_planners(Connect()) == []
    assert "planning processes left running (stopped: none): RuntimeError: [JVM_ATTRIBUTE" in caplog.text


def test_an_idle_record_and_the_batch_that_follows_are_two_records() -> None:
    from rtml.pipelines.score_job import progress_key

    idle = {"batchId": 7, "durationMs": {"latestOffset": 1, "triggerExecution": 1}}
    ran = {"batchId": 7, "durationMs": {"latestOffset": 1, "addBatch": 300, "triggerExecution": 400}}
    seen, reported = None, []
    for record in (idle, idle, ran, ran, {**idle, "batchId": 8}):  # what polling lastProgress sees
        if progress_key(record) != seen:
            seen = progress_key(record)
            reported.append(seen)
    assert reported == [(7, False), (7, True), (8, False)]
