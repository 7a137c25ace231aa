"""Run the scoring query: until stopped (SIGTERM/SIGINT stop it cleanly) or, with available_now,
over what is in the topic, then return a summary.

A stop (signal, ``stop`` event, ``max_seconds``) lets the micro-batch in progress finish, then stops
the query and returns normally (``rtml score`` exits 0). The JVM is started with SIGTERM ignored
(:func:`rtml.pipelines.spark_io.spark_session`), so a SIGTERM to the whole process group, as the
supervisor sends, reaches only this driver and the stop is the same.

Also runnable as ``spark-submit pipelines/score_job.py [--available-now]`` (settings from
``RTML_*`` / ``rtml.yaml``).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rtml.infra.config.files import replace_file
from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec

_log = logging.getLogger("rtml.scoring")


def run_scoring(
    settings: Settings,
    spec: StreamSpec,
    available_now: bool = False,
    stop: threading.Event | None = None,
    max_seconds: float | None = None,
    on_batch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the query until stopped (or, with ``available_now``, until the topic is read); ``on_batch``
    gets Spark's progress record of each micro-batch (``numInputRows``, ``batchId``, ...)."""
    from rtml.infra.config.clients import configure_mlflow
    from rtml.pipelines.batch_stop import BatchTracker, quiet_query_log, stop_after_batch
    from rtml.pipelines.metrics import start_metrics
    from rtml.pipelines.scoring import BatchSink, build_query
    from rtml.pipelines.spark_io import spark_session, tune_malloc

    tune_malloc(settings)  # before the Kafka, MLflow and metrics clients start their threads
    configure_mlflow(settings)
    _check_kafka(settings)
    stop = stop or threading.Event()
    sink = BatchSink(settings, spec)
    champion = sink.resolve_champion()  # fail fast, before Spark starts, when there is no champion
    recovered = sink.outbox.recover()  # Kafka output of batches a crash left undelivered
    sink.metrics = metrics = start_metrics(settings, champion)  # /metrics; None when metrics.port is 0
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    last_batch: tuple[Any, bool] | None = None
    restore_log: list[Callable[[], None]] = []
    try:
        spark = spark_session(settings, "rtml-scoring")
        t0 = time.monotonic()
        tracker = BatchTracker(sink)
        tracker.on_refuse = lambda: restore_log.append(quiet_query_log(spark))
        query = build_query(spark, settings, spec, tracker, available_now)  # type: ignore[arg-type]

        def report() -> None:
            nonlocal last_batch
            progress = query.lastProgress
            if not progress:
                return
            key = progress_key(progress)
            if key != last_batch:
                last_batch = key
                write_progress(settings, progress)
                if metrics is not None:
                    metrics.record_progress(progress)
                if on_batch is not None:
                    on_batch(progress)

        while query.isActive:
            if stop.is_set() or (max_seconds is not None and time.monotonic() - t0 > max_seconds):
                stop_after_batch(query, tracker)
                break
            try:
                query.awaitTermination(0.5)
            except Exception:  # noqa: BLE001 - the query failed: reported below, in one line
                break
            report()
        report()
        error = query.exception()
        if error is not None and tracker.is_refusal(error):
            _log.info("stopped before micro-batch %s (not written; a restart runs it)", tracker.refused)
        elif error is not None:
            raise RuntimeError(f"scoring query failed: {failure_line(str(error))}")
    finally:
        for restore in restore_log:
            restore()
        sink.close()
        if metrics is not None:
            metrics.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    elapsed = time.monotonic() - t0
    summary = sink.summary()
    summary["seconds"] = round(elapsed, 2)
    summary["events_per_s"] = round(summary["read"] / elapsed, 1) if elapsed > 0 else None
    summary["recovered_kafka_batches"] = len(recovered)
    summary["ok"] = True
    return summary


def _check_kafka(settings: Settings) -> None:
    """Fail in seconds, before Spark starts, on bad SASL/TLS settings or a missing topic."""
    from rtml.infra.config.kafka_clients import KafkaConnectError
    from rtml.pipelines.kafka_check import check_topics

    t = settings.kafka.topics
    try:
        check_topics(settings, [t.events, t.scores, t.quarantine])
    except KafkaConnectError as exc:
        raise RuntimeError(str(exc)) from None


def failure_line(text: str) -> str:
    """The one line that explains a failed query: the message of the last rtml error in it, the one
    raised (Spark wraps an error raised in a Python source, task or foreachBatch in its tracebacks;
    Python prints a chained error's cause first), else the first line.

    >>> failure_line("[X] failed: Traceback ...\\n  File ...\\nrtml.pipelines.a.AError: it broke\\n\\tat ...")
    'it broke'
    """
    import re

    raised = re.findall(r"^rtml(?:\.\w+)+Error: (.+)$", text, flags=re.MULTILINE)
    if raised:
        return raised[-1].strip()
    found = re.search(r"(?:OffsetResetError|KafkaConnectError): (.+)", text)
    return found.group(1).strip() if found else text.splitlines()[0]


PROGRESS_FILE = "_progress.json"


def progress_key(progress: dict[str, Any]) -> tuple[Any, bool]:
    """What tells Spark's progress records apart: an idle trigger reports the id of the batch that
    runs next, so that batch's own record (the one with ``addBatch``) is another record, not a repeat.

    >>> idle = {"batchId": 3, "durationMs": {"latestOffset": 2}}
    >>> ran = {"batchId": 3, "durationMs": {"latestOffset": 2, "addBatch": 90}}
    >>> progress_key(idle), progress_key(ran), progress_key(idle) == progress_key(dict(idle))
    ((3, False), (3, True), True)
    """
    return progress.get("batchId"), "addBatch" in (progress.get("durationMs") or {})


def write_progress(settings: Settings, progress: dict[str, Any]) -> None:
    """Spark's progress of the last micro-batch, for the supervisor: rates, duration, offsets."""
    import json

    end = (progress.get("sources") or [{}])[0].get("endOffset")
    if isinstance(end, str):  # Python data sources report their offsets as a JSON string
        try:
            end = json.loads(end)
        except ValueError:
            end = None
    keep = {
        "batch_id": progress.get("batchId"),
        "timestamp": progress.get("timestamp"),
        "input_rows": progress.get("numInputRows"),
        "input_rows_per_s": progress.get("inputRowsPerSecond"),
        "processed_rows_per_s": progress.get("processedRowsPerSecond"),
        "batch_duration_ms": (progress.get("durationMs") or {}).get("triggerExecution"),
        "end_offset": end,
        "written_at_ms": int(time.time() * 1000),
    }
    path = settings.sink_root / PROGRESS_FILE
    replace_file(path, json.dumps(keep, default=str))


if __name__ == "__main__":
    import json

    from rtml.infra.config.settings import load_settings
    from rtml.infra.config.spec import load_spec

    s = load_settings()
    print(json.dumps(run_scoring(s, load_spec(s.spec), available_now="--available-now" in sys.argv)))
