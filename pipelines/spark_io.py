"""Spark session and Kafka read/write, through the Python data source or the native connector."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rtml.infra.config.kafka_clients import connection_options
from rtml.infra.config.settings import Settings
from rtml.pipelines.kafka_native import native_options
from rtml.pipelines.kafka_source import FORMAT, KafkaDataSource, spark_options
from rtml.pipelines.malloc import for_executors, malloc_env, set_malloc
from rtml.pipelines.offset_reset import RECORDS_DIR
from rtml.pipelines.spark_conf import (
    describe,
    executor_env,
    fill_unset,
    is_one_jvm,
    launcher_conf_before_jvm,
    local_jvm_defaults,
    shared_storage_warning,
)

_log = logging.getLogger("rtml.spark")
# Keys an earlier spark_session call in this process filled (not the launcher's): a later call with
# other settings (another shuffle_partitions, say) may set them again on the running session.
_RTML_FILLED: dict[str, str] = {}
# malloc variables rtml put in this process's environment (for the JVM): not the user's own
_RTML_MALLOC: dict[str, str] = {}


def spark_session(settings: Settings, app_name: str = "rtml") -> Any:
    """A SparkSession with the rtml Kafka data source registered.

    What the launcher set wins (``spark-submit`` flags, ``spark-defaults.conf``, ``PYSPARK_SUBMIT_ARGS``,
    a running SparkContext); rtml's settings fill only the keys it left unset (:mod:`spark_conf`).
    """
    import os
    import sys

    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    launched = _launcher_conf()
    ours = rtml_conf(settings, app_name, launched)
    builder = SparkSession.builder
    filled = fill_unset(launched, ours)
    for key, value in filled.items():
        builder = builder.config(key, value)
    new_context = SparkContext._active_spark_context is None
    # glibc malloc as spark.malloc_* ask (a micro-batch's large blocks returned to the OS, fewer arenas):
    # this process now, whoever launched the JVM; the JVM pyspark launches through its environment
    # (below); the Python workers and executors through spark.executorEnv (rtml_conf)
    wanted = tune_malloc(settings, launched)
    if not _jvm_running():
        # Only before pyspark launches the JVM: the JVM and its Python workers inherit this.
        os.environ.setdefault("SPARK_LOCAL_IP", settings.spark.driver_host)
        # The driver-side Python runners (data source planning, UDF analysis) take the interpreter
        # from the JVM's environment, not from spark.pyspark.python: this one has rtml installed.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        for name in set(_RTML_MALLOC) - set(wanted):  # an earlier call's, not asked for now
            if os.environ.get(name) == _RTML_MALLOC.pop(name):
                del os.environ[name]
        os.environ.update(wanted)
        _RTML_MALLOC.update(wanted)
    with _jvm_ignores_sigterm():
        spark = builder.getOrCreate()
    if new_context:  # what rtml, not the launcher, set in this process's context
        _RTML_FILLED.clear()
        _RTML_FILLED.update(filled)
    spark.sparkContext.setLogLevel("ERROR")
    spark.dataSource.register(KafkaDataSource)
    _use_checkpoint_files(spark, settings, launched)
    _log.info(
        "spark: master %s; kept from the launcher: %s",
        spark.sparkContext.master,
        ", ".join(sorted(k for k in ours if k in launched)) or "nothing",
    )
    _log.debug("spark: set by rtml: %s", describe(filled))
    paths = {
        "spark.checkpoint_root": str(settings.checkpoint_root),
        "spark.sink_root": str(settings.sink_root),
    }
    warning = shared_storage_warning(spark.sparkContext.master, paths)
    if warning:
        _log.warning(warning)
    return spark


def tune_malloc(settings: Settings, launched: Mapping[str, str] | None = None) -> dict[str, str]:
    """glibc malloc in this process as ``spark.malloc_*`` ask (where the environment sets nothing), by
    ``mallopt``: it acts from now on (arenas already made stay; with more than the limit made already,
    the limit does nothing), so a job calls it before it starts threads. The variables, for the
    processes started from here on. ``launched``: the launcher's Spark conf (read when not given),
    whose master decides the arenas (:func:`_arenas`)."""
    effective = _effective(settings, _launcher_conf() if launched is None else launched)
    wanted = malloc_env(settings.spark.malloc_mmap_threshold, _user_env(), _arenas(settings, effective))
    set_malloc(wanted)
    return wanted


CHECKPOINT_FILES_KEY = "spark.sql.streaming.checkpointFileManagerClass"
CHECKPOINT_FILES = (  # Spark's FileSystem-based manager: its name from Spark 4.1 on, then in 4.0
    "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager",
    "org.apache.spark.sql.execution.streaming.FileSystemBasedCheckpointFileManager",
)


def checkpoint_files(has_class: Callable[[str], bool]) -> str | None:
    """The checkpoint file manager rtml asks for: Spark's FileSystem-based one, under the name this
    JVM has it (``has_class``), else None (Spark's default stays).

    Spark's default, FileContext-based, renames a local file through ``readlink`` processes forked
    from the JVM: an offset or commit log write took 34-41 ms, through the FileSystem API 11 ms, and
    a micro-batch writes two (README "Benchmarks", 2026-12-04). On a local or mounted filesystem,
    where rtml keeps its checkpoints, both check that the file is new and then rename it (Hadoop's
    ``AbstractFileSystem.renameInternal``), so a second writer of a checkpoint still fails.

    >>> checkpoint_files(lambda name: ".checkpointing." not in name).rsplit(".", 2)[-2:]
    ['streaming', 'FileSystemBasedCheckpointFileManager']
    >>> checkpoint_files(lambda name: False) is None
    True
    """
    return next((name for name in CHECKPOINT_FILES if has_class(name)), None)


def _use_checkpoint_files(spark: Any, settings: Settings, launched: Mapping[str, str]) -> None:
    """Set :func:`checkpoint_files` on the session unless the launcher or ``spark.conf`` chose one."""
    if CHECKPOINT_FILES_KEY in launched or CHECKPOINT_FILES_KEY in settings.spark.conf:
        return
    jvm = spark.sparkContext._jvm

    def has_class(name: str) -> bool:
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        try:
            jvm.java.lang.Class.forName(name, False, loader)
        except Exception:  # noqa: BLE001 - py4j raises its own error for a missing class
            return False
        return True

    name = checkpoint_files(has_class)
    if name is not None:
        spark.conf.set(CHECKPOINT_FILES_KEY, name)


def _effective(settings: Settings, launched: Mapping[str, str] | None) -> dict[str, str]:
    """The Spark conf the session gets: ``spark.conf`` with the launcher's keys over it (fill_unset)."""
    return {**settings.spark.conf, **(launched or {})}


def _master(settings: Settings, effective: Mapping[str, str]) -> str:
    return effective.get("spark.master", settings.spark.master)


def _arenas(settings: Settings, effective: Mapping[str, str]) -> int:
    """``spark.malloc_arena_max`` in one local JVM (:func:`is_one_jvm`, where it was measured), else 0."""
    return settings.spark.malloc_arena_max if is_one_jvm(_master(settings, effective)) else 0


def _user_env() -> dict[str, str]:
    """This process's environment without the malloc variables rtml put there itself."""
    import os

    return {k: v for k, v in os.environ.items() if _RTML_MALLOC.get(k) != v}


def rtml_conf(
    settings: Settings, app_name: str = "rtml", launched: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The Spark configuration rtml's settings ask for (applied only where the launcher set nothing;
    ``launched``, what the launcher set, decides the master and the JVM's collector)."""
    import os
    import sys

    effective = _effective(settings, launched)
    # In one local JVM: Python workers fork from a daemon that imported the scoring libraries first,
    # and the JVM runs the serial collector (G1 grew its heap to ~0.6-0.7 GB for ~0.1 GB live):
    # -0.36 and -0.48 GB PSS of the scoring job side by side (README "Benchmarks", 2026-12-03).
    local_conf, collector = local_jvm_defaults(
        _master(settings, effective),
        os.environ,
        effective.get("spark.driver.defaultJavaOptions", ""),
        py_files=effective.get("spark.submit.pyFiles", ""),
    )

    conf = {
        "spark.app.name": app_name,
        "spark.master": settings.spark.master,
        "spark.sql.shuffle.partitions": str(settings.spark.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.host": settings.spark.driver_host,  # bindAddress defaults to it
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.streaming.stateStore.providerClass": (
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
        ),
        "spark.python.worker.reuse": "true",
        **local_conf,
        # A state store commit writes the micro-batch's changed keys to a changelog file instead of
        # checkpointing all of RocksDB (snapshots move to the background maintenance): the commit at
        # 2,000 events/s went from ~120 ms to ~55 ms per micro-batch (README "Benchmarks", 2026-12-01).
        # Spark reads checkpoints written either way, so it can be switched on and off for a query.
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        # With the keyed state stores the scoring query is stateless to Spark, and Spark (4.1+) runs such
        # streams with adaptive execution: the read stage became a job of its own, run before foreachBatch
        # was called, then the query planned again. Off, a micro-batch is one job: p50 at 2,000 events/s
        # lower in 6 of 9 alternating pairs, ≈25 ms (4 of 7, ≈19 ms, for this key alone; README
        # "Benchmarks", 2026-12-04). Batch queries keep adaptive execution.
        "spark.sql.adaptive.streaming.stateless.enabled": "false",
        # Python workers: quiet model loads, no pyspark pandas-concat FutureWarning
        "spark.executorEnv.MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "spark.executorEnv.PYTHONWARNINGS": "ignore::FutureWarning",
        **executor_env(settings.tracking_uri, os.environ),
        # the Python workers and executors on other hosts: the same malloc settings (the user's win)
        **{
            f"spark.executorEnv.{k}": v
            for k, v in for_executors(
                settings.spark.malloc_mmap_threshold, _user_env(), _arenas(settings, effective)
            ).items()
        },
    }
    if "PYSPARK_PYTHON" not in os.environ:  # workers run this interpreter (it has the project installed)
        conf["spark.pyspark.python"] = sys.executable
    if "spark.driver.extraJavaOptions" not in settings.spark.conf:  # JVM logs to a file, errors on stderr
        logs = settings.state_dir.resolve() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log4j = Path(__file__).with_name("log4j2.properties")
        options = f"-Dlog4j2.configurationFile={log4j} -Drtml.log.dir={logs}"
        conf["spark.driver.extraJavaOptions"] = f"{collector} {options}".strip()
    return conf | settings.spark.conf


def _jvm_running() -> bool:
    from pyspark import SparkContext

    return SparkContext._jvm is not None or SparkContext._active_spark_context is not None


def _launcher_conf() -> dict[str, str]:
    """What the launcher set: a running SparkContext's conf, spark-submit's, or what pyspark will load."""
    import os

    from pyspark import SparkConf, SparkContext
    from pyspark.find_spark_home import _find_spark_home

    active = SparkContext._active_spark_context
    if active is not None:  # its conf wins, except what an earlier spark_session call filled in
        return {k: v for k, v in active.getConf().getAll() if k not in _RTML_FILLED}
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        # spark-submit started this driver and its JVM: the JVM's properties hold its flags and defaults
        SparkContext._ensure_initialized()
        return dict(SparkConf().getAll())
    return launcher_conf_before_jvm(os.environ, _find_spark_home())


@contextmanager
def _jvm_ignores_sigterm() -> Iterator[None]:
    """Launch the JVM with SIGTERM ignored, so that only the Python driver decides how to stop.

    A supervisor stops the job with SIGTERM to its process group, which holds the JVM (and the
    Python processes the JVM starts directly) too. The JVM would run its shutdown hooks at once,
    stopping the SparkContext under the running query: the driver's clean stop then fails with
    ``java.io.EOFException`` / py4j connection errors and a traceback. A signal ignored when a
    process starts stays ignored across exec and HotSpot leaves it so, which also reaches the JVM's
    own Python children. The JVM still ends with the driver: it exits when its stdin (a pipe from
    the driver) closes, and SIGKILL ends it as before. A SIGTERM that arrives during these few
    seconds of JVM start is ignored by the driver too (the supervisor escalates to SIGKILL, which
    the checkpoint makes safe). Only in the main thread, where Python handles signals.
    """
    import signal
    import threading

    from pyspark import SparkContext

    if threading.current_thread() is not threading.main_thread() or SparkContext._active_spark_context:
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _format_and_options(settings: Settings) -> tuple[str, dict[str, str]]:
    """Spark format and connection options: native connector, or rtml's data source and its client."""
    if settings.kafka.connector == "native":
        return "kafka", native_options(settings)
    return FORMAT, spark_options(connection_options(settings)) | {"ioClient": settings.kafka.io_client}


def offset_reset_options(settings: Settings) -> dict[str, str]:
    """The source's answer to a checkpoint the log no longer holds (``kafka.on_offset_reset``).

    rtml's data source: ``onOffsetReset`` (fail | earliest | latest) and ``offsetResetLog``, where
    each reset is recorded with the offsets it skipped (:mod:`rtml.pipelines.offset_reset`). The
    native connector's equivalent is ``failOnDataLoss``: ``true`` for ``fail``; ``false`` for
    ``earliest``, with which Spark logs a warning and goes on from the earliest offset the log holds
    (it records no skipped count; ``latest`` has no equivalent and is refused by the settings).
    """
    policy = settings.kafka.on_offset_reset
    if settings.kafka.connector == "native":
        return {"failOnDataLoss": "true" if policy == "fail" else "false"}
    return {"onOffsetReset": policy, "offsetResetLog": str(settings.sink_root.resolve() / RECORDS_DIR)}


def read_kafka_stream(
    spark: Any, settings: Settings, topic: str, starting: str = "earliest", max_per_trigger: int | None = None
) -> Any:
    """Streaming DataFrame with Spark's Kafka source columns."""
    fmt, opts = _format_and_options(settings)
    reader = spark.readStream.format(fmt)
    opts |= {"subscribe": topic, "startingOffsets": starting} | offset_reset_options(settings)
    if max_per_trigger:
        opts["maxOffsetsPerTrigger"] = str(max_per_trigger)
    return reader.options(**opts).load()


def write_kafka(df: Any, settings: Settings, topic: str) -> None:
    """Batch-write a DataFrame with columns value [, key, headers] to a topic."""
    fmt, opts = _format_and_options(settings)
    df.write.format(fmt).options(**opts, topic=topic).mode("append").save()
