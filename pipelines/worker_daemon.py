"""Spark's Python daemon (``spark.python.daemon.module``), with the scoring workers' libraries
imported once before it forks them.

Spark forks every Python worker of a kind from one daemon process; each worker then imports what
its task needs. A scoring task imports NumPy, pandas, pyarrow, scikit-learn, MLflow and rtml's
scoring modules, each worker its own copy. Imported in the daemon instead, before the fork, the pages
those imports fill start shared copy-on-write by the daemon and all its workers, and
:func:`gc.freeze` keeps the collector from touching (and so copying) them in the children.
Reference counts still copy some of them: measured, the Python workers' total PSS fell by ≈0.12 GB
(README "Benchmarks", 2026-12-03). Used with ``local`` / ``local[N]`` masters and rtml installed
only (:func:`rtml.pipelines.spark_conf.local_jvm_defaults`): executors of a cluster, or a job
launched with ``--py-files``, may get rtml only on a ``sys.path`` set after this module would have
to be imported.

Only the daemon of ``pyspark.worker`` (UDFs, pandas and Arrow functions, data source reads)
imports them; the daemons Spark starts for data source planning stay small. A library that fails
to import is left to the worker, where the error is reported as before.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
import warnings

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
    """Import ``modules``, skipping any that fail; returns the ones imported. Nothing they print
    reaches file descriptor 1, where the daemon writes its port for the JVM; warnings are silenced.

    >>> preload(("json", "no_such_module_here"))
    ['json']
    """
    done: list[str] = []
    _flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)  # native code writes to fd 1 too, not only through sys.stdout
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in modules:
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: BLE001 - the worker imports it again and reports the error
                    continue
                done.append(name)
            if "mlflow.pyfunc" in done:
                warm_mlflow()
    finally:
        try:
            _flush()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    return done


def warm_mlflow() -> bool:
    """Build MLflow's map of installed packages once, in the daemon: each worker's first
    ``mlflow.pyfunc.load_model`` checks the model's requirements against it, and building it scans
    every installed distribution (≈0.36 s on a quiet machine, per worker when each builds its own).
    Returns whether it was built. Called by :func:`preload`, whose guard keeps file descriptor 1
    clean.
    """
    try:
        from mlflow.utils import requirements_utils

        requirements_utils.warn_dependency_requirement_mismatches(["mlflow"])  # installed: no warning
        return requirements_utils._MODULES_TO_PACKAGES is not None  # it catches its own errors
    except Exception:  # noqa: BLE001 - the worker's own check builds it as before
        return False


def _flush() -> None:
    """What Python and C buffered for standard output, written out now (nothing when there is none)."""
    with contextlib.suppress(Exception):
        if sys.stdout is not None:
            sys.stdout.flush()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).fflush(None)


def _reseed_numpy() -> None:
    """Each forked worker draws its own NumPy global random stream, as Python's ``random`` does."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def main() -> None:
    """Preload for ``pyspark.worker``'s daemon, then run Spark's daemon loop.

    The imports start threads before the fork (OpenBLAS's pool, pyarrow's jemalloc background
    thread), which pyspark's own daemon avoids: both libraries register ``pthread_atfork``
    handlers that stop or reset them around a fork, and the children are single-threaded when
    they start their task.
    """
    worker_module = sys.argv[1] if len(sys.argv) > 1 else "pyspark.worker"
    if worker_module == "pyspark.worker":
        preload()  # with MLflow's package map (warm_mlflow)
        os.register_at_fork(after_in_child=_reseed_numpy)
        gc.collect()
        gc.freeze()  # the children's collections skip these objects, so leave their pages shared
    from pyspark.daemon import manager

    manager()


if __name__ == "__main__":
    main()
