"""Spark's Python daemon (``spark.python.daemon.module``), with the scoring workers' libraries
imported once before it forks them.

Spark forks every Python worker of a kind from one daemon process; each worker then imports what
its task needs. A scoring task imports NumPy, pandas, pyarrow, scikit-learn, MLflow and rtml's
scoring modules: ≈250 MB of interpreter objects, private to each worker. Imported in the daemon
instead, before the fork, those pages are shared copy-on-write by the daemon and all its workers,
and :func:`gc.freeze` keeps the collector from touching (and so copying) them in the children.

Only the daemon of ``pyspark.worker`` (UDFs, pandas and Arrow functions, data source reads)
imports them; the daemons Spark starts for data source planning stay small. A library that fails
to import is left to the worker, where the error is reported as before.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys

#: imported before forking, in this order; what a scoring task would import anyway
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow",
    "pyarrow.compute",
    "sklearn.linear_model",
    "mlflow.pyfunc",
    "confluent_kafka",
    "pyspark.worker",
    "rtml.pipelines.partition_reader",
    "rtml.pipelines.kafka_source",
    "rtml.pipelines.validation",
    "rtml.pipelines.scorer",
    "rtml.pipelines.keyed_state",
    "rtml.models.lifecycle.registry",
    "rtml.models.learners.families",
)


def preload(modules: tuple[str, ...] = PRELOAD) -> list[str]:
    """Import ``modules``, skipping any that fail; returns the ones imported.

    >>> preload(("json", "no_such_module_here"))
    ['json']
    """
    done = []
    with contextlib.redirect_stdout(sys.stderr):  # the daemon's stdout carries its port to the JVM
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the worker imports it again and reports the error
                continue
            done.append(name)
    return done


def main() -> None:
    """Preload for ``pyspark.worker``'s daemon, then run Spark's daemon loop."""
    worker_module = sys.argv[1] if len(sys.argv) > 1 else "pyspark.worker"
    if worker_module == "pyspark.worker":
        preload()
        gc.collect()
        gc.freeze()  # the children's collections skip these objects, so leave their pages shared
    from pyspark.daemon import manager

    manager()


if __name__ == "__main__":
    main()
