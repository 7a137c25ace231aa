"""Stop Spark's data source planning processes once the scoring query has read its first events.

Before a query reads rtml's Kafka data source, the driver's JVM runs Python three times to plan it:
to look the source up, to create it and to plan its read (the last one lazily, at the first
micro-batch with data). Spark starts one daemon process per kind (:data:`PLANNERS`), each forks a
worker, and Spark keeps them: the idle workers until a minute passes without planning, the daemons
for the life of the session. In the local scoring job that is six processes and ≈0.24 GB of PSS at
the start, three for good, that the running query does not use again (its micro-batches go through
the streaming source's own runner and the ``pyspark.worker`` processes). Spark has no setting for
this, so :func:`stop_planners` stops those factories through the JVM; Spark starts a stopped one
again by itself the next time it plans (a restarted query, another reader), at the cost of a Python
start.

It reaches a private field of ``SparkEnv`` (``pythonWorkers``, Spark 4.0-4.3, checked on 4.3) and
must not run while a planner is in use (stopping a daemon ends its busy worker too): the scoring job
stops each kind once its query is done with it (:class:`PlannerStops`), within the first micro-batch. Anything
unexpected (another Spark, a JVM that refuses the access, Spark Connect) leaves the processes
running and says so in the log: memory, never correctness, depends on it.
"""

from __future__ import annotations

import logging
from typing import Any

_log = logging.getLogger("rtml.spark")

#: planners a query is done with once it is resolved (before its first micro-batch)
AT_START = frozenset({"pyspark.sql.worker.lookup_data_sources", "pyspark.sql.worker.create_data_source"})
#: the planner of the stream's read: run at the first micro-batch that reads events
READ = frozenset({"pyspark.sql.worker.plan_data_source_read"})
#: the planners rtml's Kafka source starts (``pyspark.sql.worker.*`` modules the driver runs once per query)
PLANNERS = AT_START | READ


class PlannerStops:
    """Stops one query's planners as soon as it is done with each: those of :data:`AT_START` when its
    first micro-batch starts, :data:`READ` once a micro-batch has read events (in ``foreachBatch``:
    :meth:`before_batch` first, :meth:`after_read` after the batch's Spark job)."""

    def __init__(self) -> None:
        self.left = [AT_START, READ]

    def before_batch(self, spark: Any) -> None:
        if len(self.left) == 2:
            stop_planners(spark, self.left.pop(0))

    def after_read(self, spark: Any, rows: int) -> None:
        if len(self.left) == 1 and rows > 0:
            stop_planners(spark, self.left.pop(0))


def stop_planners(spark: Any, modules: frozenset[str] = PLANNERS) -> list[str]:
    """Stop the planning processes of ``modules`` this session's driver keeps; the worker modules
    whose factories were stopped (none when Spark's internals differ)."""
    stopped: list[str] = []
    try:
        jvm, sc = spark.sparkContext._jvm, spark.sparkContext._jsc.sc()
        # by Class.forName: py4j cannot list SparkEnv's own methods (one takes a protobuf class the
        # pyspark wheel does not ship), so nothing here is called on SparkEnv itself
        field = jvm.java.lang.Class.forName("org.apache.spark.SparkEnv").getDeclaredField("pythonWorkers")
        field.setAccessible(True)
        # a copy, made without SparkEnv's lock: a factory Spark adds meanwhile may break it (caught below)
        rest = field.get(sc.env()).toList()
        while not rest.isEmpty():
            key, factory = rest.head()._1(), rest.head()._2()
            rest = rest.tail()
            if key.workerModule() in modules:
                factory.stop()
                stopped.append(key.workerModule())
    except Exception as exc:  # noqa: BLE001 - only memory is at stake: the processes stay
        java = getattr(exc, "java_exception", None)
        try:
            why = java.toString() if java is not None else f"{type(exc).__name__}: {exc}"
        except Exception:  # noqa: BLE001 - the gateway itself failed
            why = type(exc).__name__
        _log.info(
            "spark: data source planning processes left running (stopped: %s): %s",
            ", ".join(sorted(stopped)) or "none",
            why.splitlines()[0][:300],
        )
        return sorted(stopped)
    _log.debug("spark: stopped the planning processes of %s", ", ".join(sorted(stopped)) or "nothing")
    return sorted(stopped)
