"""The stop-between-batches rule, as pure logic (the real query: tests/integration/test_batch_stop.py)."""

from __future__ import annotations

import threading

import pytest

from rtml.pipelines.batch_stop import BatchRefused, BatchTracker, stop_after_batch


class _Query:
    """Stands in for a StreamingQuery: commits ``written`` batches as progress after ``lag`` polls."""

    def __init__(self, tracker: BatchTracker, lag: int = 3, idle: int | None = None) -> None:
        self.tracker, self.lag, self.polls, self.stopped = tracker, lag, 0, False
        self.idle = idle  # before the commit: an idle trigger's record, which names the next batch

    @property
    def isActive(self) -> bool:  # noqa: N802 - Spark's name
        return not self.stopped

    @property
    def lastProgress(self) -> dict | None:  # noqa: N802 - Spark's name
        self.polls += 1
        if self.polls > self.lag:
            return {"batchId": self.tracker.written, "durationMs": {"addBatch": 9, "commitOffsets": 1}}
        if self.idle is not None:
            return {"batchId": self.idle, "durationMs": {"latestOffset": 1, "triggerExecution": 1}}
        return None

    def stop(self) -> None:
        self.stopped = True


def test_close_waits_for_the_batch_being_written_and_its_commit() -> None:
    started, release = threading.Event(), threading.Event()

    def slow(df, batch_id: int) -> None:  # noqa: ANN001
        started.set()
        release.wait(5)

    tracker = BatchTracker(slow)
    writer = threading.Thread(target=tracker, args=(None, 4))
    writer.start()
    started.wait(5)
    assert not tracker.close(committed=3)  # batch 4 is being written
    release.set()
    writer.join(5)
    assert not tracker.close(committed=3)  # written, not yet committed
    assert tracker.close(committed=4) and tracker.closed
    with pytest.raises(BatchRefused, match="micro-batch 5 not started"):
        tracker(None, 5)
    assert tracker.refused == 5 and tracker.written == 4
    assert tracker.is_refusal(RuntimeError("... BatchRefused: micro-batch 5 not started ..."))
    assert not tracker.is_refusal(RuntimeError("a real failure"))


def test_stop_after_batch_stops_once_the_last_write_is_committed() -> None:
    tracker = BatchTracker(lambda df, batch_id: None)
    tracker(None, 0)
    query = _Query(tracker, lag=3)
    stop_after_batch(query, tracker, grace_s=5)
    assert query.stopped and query.polls == 4 and tracker.closed


def test_past_the_grace_the_query_is_stopped_anyway_and_later_batches_refused() -> None:
    tracker = BatchTracker(lambda df, batch_id: None)
    tracker(None, 0)
    query = _Query(tracker, lag=10**9)  # never reports the commit
    stop_after_batch(query, tracker, grace_s=0.1)
    assert query.stopped and tracker.closed
    with pytest.raises(BatchRefused):
        tracker(None, 1)
    assert tracker.written == 0


def test_a_refusal_is_not_a_refusal_before_any_batch_was_refused() -> None:
    tracker = BatchTracker(lambda df, batch_id: None)
    assert not tracker.is_refusal(RuntimeError("BatchRefused in someone else's text"))


def test_an_idle_triggers_record_naming_the_written_batch_is_not_its_commit() -> None:
    # a quiet spell: Spark's last record is an idle trigger's, with the id of the batch not yet run;
    # that batch then runs and is written, and the record still names it until its commit is reported
    tracker = BatchTracker(lambda df, batch_id: None)
    tracker(None, 3)
    query = _Query(tracker, lag=5, idle=3)
    stop_after_batch(query, tracker, grace_s=5)
    assert query.stopped and query.polls == 6  # waited for the batch's own record


def test_a_failing_log_hook_still_refuses() -> None:
    tracker = BatchTracker(lambda df, batch_id: None)
    assert tracker.close(committed=None)

    def broken() -> None:
        raise OSError("the JVM is going away")

    tracker.on_refuse = broken
    with pytest.raises(BatchRefused):
        tracker(None, 0)
    assert tracker.refused == 0 and not tracker.writing
