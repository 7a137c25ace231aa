"""The stop-between-batches rule, as pure logic (the real query: tests/integration/test_batch_stop.py)."""

from __future__ import annotations

import threading

import pytest

from rtml.pipelines.batch_stop import BatchRefused, BatchTracker, stop_after_batch


class _Query:
    """Stands in for a StreamingQuery: commits ``written`` batches as progress after ``lag`` polls."""

    def __init__(self, tracker: BatchTracker, lag: int = 3) -> None:
        self.tracker, self.lag, self.polls, self.stopped = tracker, lag, 0, False

    @property
    def isActive(self) -> bool:  # noqa: N802 - Spark's name
        return not self.stopped

    @property
    def lastProgress(self) -> dict | None:  # noqa: N802 - Spark's name
        self.polls += 1
        return {"batchId": self.tracker.written} if self.polls > self.lag else None

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
