"""Stop a streaming query between micro-batches.

Spark has no "stop after this batch": ``query.stop()`` interrupts whatever the query thread does.
Between two batches that thread plans the next one (asks the source for offsets, logs them), and an
interrupt does not break the source's blocking calls, so a batch planned while the stop arrives still
reaches ``foreachBatch``, gets written, and is left uncommitted. :class:`BatchTracker` closes that
window: once the stop is decided no batch starts writing; one that arrives is refused before it
touches any data (:class:`BatchRefused`), so the query ends with the batch's offsets logged and
nothing of it written or committed, exactly as when the interrupt lands in the planning. A restart
runs that batch as usual.

>>> tracker = BatchTracker(lambda df, batch_id: None)
>>> tracker(None, 0)
>>> tracker.written, tracker.close(committed=0), tracker.closed
(0, True, True)
>>> tracker(None, 1)
Traceback (most recent call last):
...
rtml.pipelines.batch_stop.BatchRefused: micro-batch 1 not started: the job is stopping (a restart runs it)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

_log = logging.getLogger("rtml.scoring")

BATCH_GRACE_S = 45.0  # longest wait for the micro-batch in progress before stopping anyway


class BatchRefused(RuntimeError):
    """A micro-batch that began after the stop was decided: not written, not committed."""


class BatchTracker:
    """foreachBatch wrapper around the sink: is a micro-batch being written, which one was last, and
    once :meth:`close` succeeded, refuse every later one.

    ``on_refuse`` runs on the query thread just before the refusal is raised (the scoring job uses it
    to keep Spark from printing the expected error's stack trace).
    """

    def __init__(self, sink: Callable[[Any, int], None]) -> None:
        self.sink = sink
        self.writing = False
        self.written: int | None = None
        self.closed = False
        self.refused: int | None = None
        self.on_refuse: Callable[[], None] = lambda: None
        self._lock = threading.Lock()

    def __call__(self, df: Any, batch_id: int) -> None:
        with self._lock:
            refuse = self.closed
            if refuse:
                self.refused = batch_id
            else:
                self.writing = True
        if refuse:
            try:
                self.on_refuse()
            except Exception:  # noqa: BLE001 - only the log's looks: the refusal must stay a refusal
                _log.debug("stop: quieting the query's log failed", exc_info=True)
            raise BatchRefused(f"micro-batch {batch_id} not started: the job is stopping (a restart runs it)")
        try:
            self.sink(df, batch_id)
            self.written = batch_id
        finally:
            self.writing = False

    def close(self, committed: int | None, force: bool = False) -> bool:
        """Close when no batch is being written and the last one written is ``committed`` (or with
        ``force``); after that no batch starts writing. True when closed."""
        with self._lock:
            done = self.written is None or (committed is not None and committed >= self.written)
            if force or (not self.writing and done):
                self.closed = True
            return self.closed

    def is_refusal(self, error: object) -> bool:
        """Whether the query's error is this tracker's refusal of a batch (a clean stop)."""
        wanted = f"{BatchRefused.__name__}: micro-batch {self.refused} not started"
        return self.refused is not None and wanted in str(error)


def committed_batch(progress: dict[str, Any] | None) -> int | None:
    """The newest micro-batch committed, from Spark's last progress record: a batch that ran reports
    its own id (after its commit, ``commitOffsets`` timed), an idle trigger the id of the next batch,
    not yet run.

    >>> committed_batch({"batchId": 7, "durationMs": {"addBatch": 900, "commitOffsets": 4}})
    7
    >>> committed_batch({"batchId": 8, "durationMs": {"latestOffset": 3, "triggerExecution": 3}})
    7
    """
    if not progress or progress.get("batchId") is None:
        return None
    batch = int(progress["batchId"])
    return batch if "commitOffsets" in (progress.get("durationMs") or {}) else batch - 1


def stop_after_batch(query: Any, tracker: BatchTracker, grace_s: float = BATCH_GRACE_S) -> None:
    """Stop the query between micro-batches: once no batch is being written and the last one written
    is committed (Spark reports a batch's progress after its commit), at most after ``grace_s``.

    The tracker is closed first, so a batch Spark plans meanwhile is refused unwritten (its offsets
    are logged, a restart runs it). Past ``grace_s`` a batch still being written is stopped anyway:
    it is left uncommitted and the restart rewrites it identically (the sinks are idempotent per batch
    id), which is said in a warning.
    """
    t0 = time.monotonic()
    clean = False
    while query.isActive and time.monotonic() - t0 < grace_s:
        try:
            committed = committed_batch(query.lastProgress)
        except Exception:  # noqa: BLE001 - progress unavailable: the query is ending anyway
            break
        if tracker.close(committed):
            clean = True
            break
        time.sleep(0.02)
    tracker.close(None, force=True)
    if not clean and query.isActive:
        _log.warning(
            "stop: micro-batch %s not seen committed after %.1f s (%s); stopped anyway, a restart "
            "rewrites it",
            tracker.written,
            time.monotonic() - t0,
            "still being written" if tracker.writing else "written",
        )
    query.stop()


def quiet_query_log(spark: Any) -> Callable[[], None]:
    """Turn off the active queries' own logger (their "terminated with error" stack trace) for the
    refusal, which :func:`stop_after_batch` caused and the scoring job reports as a clean stop;
    returns what puts the previous levels back."""
    jvm = spark.sparkContext._jvm
    log4j = jvm.org.apache.logging.log4j
    names = [q._jsq.streamingQuery().getClass().getName() for q in spark.streams.active]
    previous = {name: log4j.LogManager.getLogger(name).getLevel() for name in names}

    def restore() -> None:
        for name, level in previous.items():
            log4j.core.config.Configurator.setLevel(name, level)

    try:
        for name in previous:
            log4j.core.config.Configurator.setLevel(name, log4j.Level.OFF)
    except Exception:
        restore()
        raise
    return restore
