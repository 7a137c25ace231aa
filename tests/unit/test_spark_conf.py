"""Spark configuration: the launcher's keys win, rtml's settings fill the rest (pure logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtml.infra.config.settings import load_settings
from rtml.pipelines.spark_conf import (
    JAVA_OPTION_VARS,
    MASK,
    MLFLOW_ENV,
    describe,
    fill_unset,
    launcher_conf_before_jvm,
    local_jvm_defaults,
    parse_defaults,
    redact,
    shared_storage_warning,
    submit_args_conf,
)
from rtml.pipelines.spark_io import rtml_conf


def test_launcher_keys_win_and_settings_fill_the_rest(tmp_path: Path) -> None:
    s = load_settings(
        use_default_file=False,
        overrides={"state_dir": str(tmp_path), "spark": {"shuffle_partitions": 7, "conf": {"spark.x": "1"}}},
    )
    ours = rtml_conf(s)
    launched = {"spark.master": "spark://m:7077", "spark.sql.shuffle.partitions": "2", "spark.x": "9"}
    filled = fill_unset(launched, ours)
    assert "spark.master" not in filled and "spark.sql.shuffle.partitions" not in filled
    assert "spark.x" not in filled  # settings.spark.conf fills only, too
    assert filled["spark.sql.session.timeZone"] == "UTC"
    assert fill_unset({}, ours)["spark.sql.shuffle.partitions"] == "7"
    assert fill_unset({}, ours)["spark.master"] == "local[2]"


def test_defaults_file_from_spark_conf_dir_then_submit_args(tmp_path: Path) -> None:
    (tmp_path / "spark-defaults.conf").write_text(
        "# cluster defaults\nspark.master   spark://a:7077\nspark.sql.shuffle.partitions 4\n\nspark.y=z\n"
    )
    env = {
        "SPARK_CONF_DIR": str(tmp_path),
        "PYSPARK_SUBMIT_ARGS": "--conf spark.sql.shuffle.partitions=3 pyspark-shell",
    }
    conf = launcher_conf_before_jvm(env, spark_home="/nonexistent")
    assert conf == {"spark.master": "spark://a:7077", "spark.sql.shuffle.partitions": "3", "spark.y": "z"}


def test_spark_home_conf_used_without_conf_dir(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "spark-defaults.conf").write_text("spark.master local[1]\n")
    assert launcher_conf_before_jvm({}, spark_home=str(tmp_path)) == {"spark.master": "local[1]"}
    assert launcher_conf_before_jvm({}, spark_home=str(tmp_path / "none")) == {}


def test_parsers() -> None:
    assert parse_defaults("a b c\nd\n") == {"a": "b c", "d": ""}
    assert submit_args_conf("--master=spark://h:1 --conf 'spark.e=x y' app.py") == {
        "spark.master": "spark://h:1",
        "spark.e": "x y",
    }
    assert submit_args_conf("") == {}


def test_driver_host_is_its_own_setting(tmp_path: Path) -> None:
    s = load_settings(use_default_file=False, overrides={"state_dir": str(tmp_path), "host": "0.0.0.0"})
    assert rtml_conf(s)["spark.driver.host"] == "127.0.0.1"  # not the embedded services' bind address
    s = load_settings(
        use_default_file=False, overrides={"state_dir": str(tmp_path), "spark": {"driver_host": "10.0.0.5"}}
    )
    assert rtml_conf(s)["spark.driver.host"] == "10.0.0.5"
    assert "spark.driver.bindAddress" not in rtml_conf(s)  # Spark binds to the driver host unless told


def test_executors_get_mlflow_uri_and_credentials_never_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cr3t-pw")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-xyz")
    s = load_settings(
        use_default_file=False,
        overrides={"state_dir": str(tmp_path), "mlflow": {"tracking_uri": "https://mlflow.prod"}},
    )
    conf = rtml_conf(s)
    assert conf["spark.executorEnv.MLFLOW_TRACKING_URI"] == "https://mlflow.prod"
    assert conf["spark.executorEnv.MLFLOW_TRACKING_USERNAME"] == "alice"
    assert conf["spark.executorEnv.MLFLOW_TRACKING_PASSWORD"] == "s3cr3t-pw"
    assert conf["spark.executorEnv.MLFLOW_TRACKING_TOKEN"] == "tok-xyz"
    masked = redact(conf)
    assert masked["spark.executorEnv.MLFLOW_TRACKING_PASSWORD"] == MASK
    assert masked["spark.executorEnv.MLFLOW_TRACKING_TOKEN"] == MASK
    assert masked["spark.executorEnv.MLFLOW_TRACKING_USERNAME"] == "alice"
    line = describe(conf)
    assert "s3cr3t-pw" not in line and "tok-xyz" not in line
    assert "spark.executorEnv.MLFLOW_TRACKING_URI=https://mlflow.prod" in line


def test_no_credentials_in_the_environment_forwards_only_the_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in MLFLOW_ENV:
        monkeypatch.delenv(name, raising=False)
    conf = rtml_conf(load_settings(use_default_file=False, overrides={"state_dir": str(tmp_path)}))
    assert [k for k in conf if "MLFLOW_TRACKING" in k] == ["spark.executorEnv.MLFLOW_TRACKING_URI"]


def test_shared_storage_warning_on_a_cluster_with_local_paths() -> None:
    paths = {"spark.checkpoint_root": ".rtml/checkpoints", "spark.sink_root": "s3a:/bucket/sink"}
    line = shared_storage_warning("spark://m:7077", paths)
    assert line is not None and "\n" not in line
    assert "spark.checkpoint_root=.rtml/checkpoints" in line and "spark.sink_root" not in line
    assert "shared storage" in line
    assert shared_storage_warning("local[2]", paths) is None
    assert shared_storage_warning("local-cluster[2,1,1024]", paths) is None
    assert shared_storage_warning("k8s://https://api:6443", {"a": "s3a://b/c", "b": "hdfs://nn/x"}) is None
    both = shared_storage_warning("yarn", {"a": "/data/cp", "b": "file:///data/sink"})
    assert both is not None and "are local paths" in both


class _FakeContext:
    def __init__(self, conf: dict[str, str]) -> None:
        self._conf = conf

    def getConf(self) -> _FakeContext:  # noqa: N802 - pyspark's name
        return self

    def getAll(self) -> list[tuple[str, str]]:  # noqa: N802
        return list(self._conf.items())


def test_a_running_context_wins_except_what_rtml_filled(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyspark import SparkContext

    from rtml.pipelines import spark_io

    running = {"spark.master": "spark://m:7077", "spark.sql.shuffle.partitions": "1", "spark.app.name": "x"}
    monkeypatch.setattr(SparkContext, "_active_spark_context", _FakeContext(running))
    monkeypatch.setattr(spark_io, "_RTML_FILLED", {})
    assert spark_io._launcher_conf() == running  # someone else's context: all of it wins
    monkeypatch.setattr(spark_io, "_RTML_FILLED", {"spark.sql.shuffle.partitions": "1"})
    launched = spark_io._launcher_conf()  # rtml's own earlier fill may be set again by a later call
    assert "spark.sql.shuffle.partitions" not in launched and launched["spark.master"] == "spark://m:7077"


def test_without_a_jvm_the_defaults_file_is_the_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyspark import SparkContext

    from rtml.pipelines import spark_io

    (tmp_path / "spark-defaults.conf").write_text("spark.sql.shuffle.partitions 6\n")
    monkeypatch.setattr(SparkContext, "_active_spark_context", None)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS", raising=False)
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    assert spark_io._launcher_conf() == {"spark.sql.shuffle.partitions": "6"}


def test_state_store_commits_changelogs(tmp_path: Path) -> None:
    conf = rtml_conf(load_settings(use_default_file=False, overrides={"state_dir": str(tmp_path)}))
    assert conf["spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled"] == "true"
    assert "spark.driver.memory" not in conf  # measured: a smaller heap cost throughput (README)
    assert "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled" not in fill_unset(
        {"spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "false"}, conf
    )  # a launcher that turns it off wins


def test_stateless_streams_run_without_adaptive_execution(tmp_path: Path) -> None:
    conf = rtml_conf(load_settings(use_default_file=False, overrides={"state_dir": str(tmp_path)}))
    assert conf["spark.sql.adaptive.streaming.stateless.enabled"] == "false"
    assert "spark.sql.adaptive.enabled" not in conf  # batch queries keep adaptive execution
    assert "spark.sql.adaptive.streaming.stateless.enabled" not in fill_unset(
        {"spark.sql.adaptive.streaming.stateless.enabled": "true"}, conf
    )  # a launcher that turns it on wins


def test_malloc_variables_for_the_workers_and_executors(tmp_path: Path) -> None:
    """Nothing at the default 0; rtml's threshold where the user set nothing; the user's own
    MALLOC_* values win per parameter, and one set through GLIBC_TUNABLES is forwarded as its
    MALLOC_* variable (executors on other hosts do not get the user's GLIBC_TUNABLES)."""
    from rtml.infra.config.settings import ConfigError
    from rtml.pipelines.malloc import for_executors

    def at(threshold: int, arenas: int = 0):  # noqa: ANN202
        spark = {"malloc_mmap_threshold": threshold, "malloc_arena_max": arenas}
        return load_settings(use_default_file=False, overrides={"state_dir": str(tmp_path), "spark": spark})

    def executors(threshold: int, env: dict[str, str], arenas: int = 0) -> dict[str, str]:  # as rtml_conf
        s = at(threshold, arenas).spark
        return for_executors(s.malloc_mmap_threshold, env, s.malloc_arena_max)

    mmap, trim, arena = "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX"
    assert executors(0, {mmap: "65536"}) == {}
    assert executors(131072, {}) == {mmap: "131072", trim: "131072"}
    assert executors(131072, {mmap: "65536"}) == {mmap: "65536", trim: "131072"}
    tunables = {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1:glibc.malloc.arena_max=4"}
    assert executors(131072, tunables) == {mmap: "131072", trim: "1"}  # arenas at 0: the user's stay theirs
    assert executors(131072, {trim: "7", **tunables}) == {mmap: "131072", trim: "1"}  # glibc: the tunable
    # the arenas: rtml's 2 (the default) unless the user set them, as MALLOC_ARENA_MAX or a tunable
    defaults = load_settings(use_default_file=False, overrides={"state_dir": str(tmp_path)})
    assert defaults.spark.malloc_arena_max == 2
    assert executors(0, {}, arenas=2) == {arena: "2"}
    assert executors(0, {arena: "8"}, arenas=2) == {arena: "8"}
    assert executors(131072, tunables, arenas=2) == {mmap: "131072", trim: "1", arena: "4"}
    with pytest.raises(ConfigError, match="at least 16384"):
        at(4096)
    with pytest.raises(ConfigError, match="greater than or equal to 0"):
        at(0, -1)


def test_local_jvm_defaults_only_for_one_local_jvm_without_a_chosen_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in JAVA_OPTION_VARS:  # none of the launchers' variables chooses a collector here
        monkeypatch.delenv(name, raising=False)
    s = load_settings(use_default_file=False, overrides={"state_dir": str(tmp_path)})
    local = rtml_conf(s)
    assert local["spark.python.daemon.module"] == "rtml.pipelines.worker_daemon"
    assert local["spark.driver.extraJavaOptions"].startswith("-XX:+UseSerialGC -Dlog4j2.configurationFile=")
    # the launcher's master decides: a cluster keeps Spark's daemon and the JVM's own collector
    cluster = rtml_conf(s, launched={"spark.master": "spark://m:7077"})
    assert "spark.python.daemon.module" not in cluster
    assert cluster["spark.driver.extraJavaOptions"].startswith("-Dlog4j2.configurationFile=")
    # a collector chosen elsewhere: two would stop the JVM from starting
    chosen = rtml_conf(s, launched={"spark.driver.defaultJavaOptions": "-Xss4m -XX:+UseG1GC"})
    assert "UseSerialGC" not in chosen["spark.driver.extraJavaOptions"]
    assert chosen["spark.python.daemon.module"] == "rtml.pipelines.worker_daemon"
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-XX:+UseParallelGC")
    assert "UseSerialGC" not in rtml_conf(s)["spark.driver.extraJavaOptions"]
    # the user's own options replace rtml's (collector and log configuration alike)
    own = load_settings(
        use_default_file=False,
        overrides={"state_dir": str(tmp_path), "spark": {"conf": {"spark.driver.extraJavaOptions": "-Dx=1"}}},
    )
    assert rtml_conf(own)["spark.driver.extraJavaOptions"] == "-Dx=1"


def test_local_jvm_defaults_leave_clusters_shipped_code_and_chosen_collectors_alone() -> None:
    daemon = {"spark.python.daemon.module": "rtml.pipelines.worker_daemon"}
    assert local_jvm_defaults("local", {}) == (daemon, "-XX:+UseSerialGC")
    # executors in their own JVMs, or rtml shipped with --py-files: Spark's daemon
    assert local_jvm_defaults("local-cluster[2,1,1024]", {}) == ({}, "")
    assert local_jvm_defaults("local[2]", {}, py_files="/tmp/rtml.zip") == ({}, "-XX:+UseSerialGC")
    for name in ("JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "SPARK_SUBMIT_OPTS"):
        assert local_jvm_defaults("local[2]", {name: "-Xmx2g -XX:+UseShenandoahGC"}) == (daemon, "")
    # options that only look like a collector choice do not count
    assert local_jvm_defaults("local[2]", {}, "-XX:+UseGCOverheadLimit -XX:-UseG1GC")[1] == "-XX:+UseSerialGC"


def test_every_preloaded_module_exists() -> None:
    """A renamed module would silently drop out of the worker daemon's preload."""
    import importlib.util

    from rtml.pipelines.worker_daemon import PRELOAD

    assert [m for m in PRELOAD if importlib.util.find_spec(m) is None] == []


def test_checkpoint_files_by_the_name_the_jvm_has() -> None:
    from rtml.pipelines.spark_io import CHECKPOINT_FILES, checkpoint_files

    assert checkpoint_files(lambda name: True) == CHECKPOINT_FILES[0]  # Spark 4.1 on
    assert checkpoint_files(lambda name: name == CHECKPOINT_FILES[1]) == CHECKPOINT_FILES[1]  # Spark 4.0
    assert checkpoint_files(lambda name: False) is None  # neither: Spark's default stays
