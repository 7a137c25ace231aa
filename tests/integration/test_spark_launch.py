"""spark-submit's flags and spark-defaults.conf win over rtml's settings in spark_session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtml.pipelines.spark_io import CHECKPOINT_FILES

pytestmark = pytest.mark.integration
_CONTEXT_FILES = CHECKPOINT_FILES[0].replace("FileSystemBased", "FileContextBased")  # Spark's default

_SCRIPT = """
import json
import os
from rtml.infra.config.settings import load_settings
from rtml.pipelines.spark_io import spark_session
spark = spark_session(load_settings(use_default_file=False), "launch-test")
print("CONF " + json.dumps({
    "master": spark.sparkContext.master,
    "shuffle": spark.conf.get("spark.sql.shuffle.partitions"),
    "tz": spark.conf.get("spark.sql.session.timeZone"),
    "ui": spark.sparkContext.getConf().get("spark.ui.enabled"),
    "rows": spark.range(10).repartition(3).groupBy().count().collect()[0][0],
    "checkpoint_files": spark.conf.get("spark.sql.streaming.checkpointFileManagerClass", None),
}))
if os.environ.get("SECOND_SHUFFLE"):  # a second call with other settings, same process and context
    again = spark_session(load_settings(use_default_file=False, overrides={
        "spark": {"shuffle_partitions": int(os.environ["SECOND_SHUFFLE"])}}), "launch-test")
    print("AGAIN " + again.conf.get("spark.sql.shuffle.partitions"))
spark.stop()
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RTML_", "SPARK_", "PYSPARK_"))}
    shim = str(Path(__file__).resolve().parents[2] / ".shim")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (shim, env.get("PYTHONPATH")) if p)
    env |= {"RTML_STATE_DIR": str(tmp_path / "state"), "RTML_SPARK__MASTER": "local[1]"}
    env |= {"RTML_SPARK__SHUFFLE_PARTITIONS": "5", "PYSPARK_PYTHON": sys.executable}
    return env


def _seen(tmp_path: Path, text: str, env: dict[str, str], tag: str) -> dict:
    """Run ``text`` as a script; the JSON it prints after ``tag`` on a line of its own."""
    script = tmp_path / "script.py"
    script.write_text(text)
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(next(x for x in out.stdout.splitlines() if x.startswith(tag))[len(tag) :])


def _conf(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("CONF "))
    return json.loads(line[5:])


def test_spark_submit_flags_win(tmp_path: Path) -> None:
    import pyspark

    script = tmp_path / "launch.py"
    script.write_text(_SCRIPT)
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    cmd = [str(submit), "--master", "local[2]", "--conf", "spark.sql.shuffle.partitions=2", str(script)]
    conf = _conf(subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=180))
    assert conf["master"] == "local[2]"  # spark-submit's, not RTML_SPARK__MASTER's local[1]
    assert conf["shuffle"] == "2"  # spark-submit's, not the setting's 5
    assert conf["tz"] == "UTC" and conf["ui"] == "false"  # rtml fills what the launcher left unset
    assert conf["rows"] == 10
    assert conf["checkpoint_files"] == CHECKPOINT_FILES[0]  # the name this Spark (4.3) has


def test_spark_conf_dir_defaults_win_over_settings(tmp_path: Path) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "spark-defaults.conf").write_text(
        f"spark.sql.shuffle.partitions 3\nspark.sql.streaming.checkpointFileManagerClass {_CONTEXT_FILES}\n"
    )
    script = tmp_path / "launch.py"
    script.write_text(_SCRIPT)
    env = _env(tmp_path) | {"SPARK_CONF_DIR": str(conf_dir)}
    conf = _conf(
        subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180)
    )
    assert conf["shuffle"] == "3"  # the defaults file's
    assert conf["checkpoint_files"] == _CONTEXT_FILES  # the file's choice of manager too
    assert conf["master"] == "local[1]"  # the file left it unset: the setting fills it


def test_a_later_call_resets_what_rtml_set_earlier(tmp_path: Path) -> None:
    script = tmp_path / "launch.py"
    script.write_text(_SCRIPT)
    env = _env(tmp_path) | {"SECOND_SHUFFLE": "4"}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180)
    conf = _conf(out)
    assert (conf["master"], conf["shuffle"]) == ("local[1]", "5")  # nothing launched: the settings
    assert "AGAIN 4" in out.stdout.splitlines()  # rtml's own earlier value is not "the launcher's"


_MALLOC_SCRIPT = """
import json
import os
from rtml.infra.config.settings import load_settings
from rtml.pipelines.spark_io import spark_session
spark = spark_session(load_settings(use_default_file=False), "malloc-test")
names = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX")
def seen(_):
    import os
    yield {n: os.environ.get(n) for n in names}
workers = spark.sparkContext.parallelize(range(2), 2).mapPartitions(seen).collect()
jvm = {n: spark.sparkContext._jvm.java.lang.System.getenv(n) for n in names}
print("ENV " + json.dumps({"workers": workers, "jvm": jvm}))
spark.stop()
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"RTML_SPARK__MALLOC_MMAP_THRESHOLD": "131072"},
            {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2"},
        ),
        # the user's own variables win, rtml sets the others
        (
            {
                "RTML_SPARK__MALLOC_MMAP_THRESHOLD": "131072",
                "MALLOC_MMAP_THRESHOLD_": "65536",
                "MALLOC_ARENA_MAX": "8",
            },
            {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "8"},
        ),
        # the defaults: no threshold, two arenas
        ({}, {"MALLOC_MMAP_THRESHOLD_": None, "MALLOC_TRIM_THRESHOLD_": None, "MALLOC_ARENA_MAX": "2"}),
        # both at 0: rtml sets none
        (
            {"RTML_SPARK__MALLOC_ARENA_MAX": "0"},
            {"MALLOC_MMAP_THRESHOLD_": None, "MALLOC_TRIM_THRESHOLD_": None, "MALLOC_ARENA_MAX": None},
        ),
    ],
)
def test_the_jvm_and_the_python_workers_get_the_malloc_settings(
    tmp_path: Path, extra: dict[str, str], expected: dict
) -> None:
    mine = ("MALLOC_", "GLIBC_TUNABLES")  # a developer's own malloc settings would win
    env = {k: v for k, v in _env(tmp_path).items() if not k.startswith(mine)} | extra
    seen = _seen(tmp_path, _MALLOC_SCRIPT, env, "ENV ")
    assert seen["jvm"] == expected
    assert seen["workers"] == [expected, expected]


_WORKERS_SCRIPT = """
import json
import sys
from rtml.infra.config.settings import load_settings
from rtml.pipelines.spark_io import spark_session
spark = spark_session(load_settings(use_default_file=False), "daemon-test")
def seen(_):
    import gc
    import os
    import sys
    parent = open(f"/proc/{os.getppid()}/cmdline", "rb").read().split(b"\\0")
    from mlflow.utils import requirements_utils
    yield {
        "mlflow_packages": requirements_utils._MODULES_TO_PACKAGES is not None,
        "preloaded": sorted(m for m in ("sklearn.linear_model", "mlflow.pyfunc", "rtml.pipelines.scorer")
                            if m in sys.modules),
        "frozen": gc.get_freeze_count(),
        "daemon": [p.decode() for p in parent[1:4]],
    }
workers = spark.sparkContext.parallelize(range(2), 2).mapPartitions(seen).collect()
beans = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
gcs = sorted(b.getName() for b in beans)
print("SEEN " + json.dumps({"workers": workers, "gc": gcs}))
spark.stop()
"""


def test_python_workers_fork_from_a_daemon_with_the_libraries_loaded(tmp_path: Path) -> None:
    """Scoring tasks' libraries are imported once, in rtml's daemon, before Spark forks the workers
    (shared pages); the JVM runs the serial collector."""
    seen = _seen(tmp_path, _WORKERS_SCRIPT, _env(tmp_path), "SEEN ")
    for worker in seen["workers"]:
        assert worker["daemon"] == ["-m", "rtml.pipelines.worker_daemon", "pyspark.worker"]
        assert worker["preloaded"] == ["mlflow.pyfunc", "rtml.pipelines.scorer", "sklearn.linear_model"]
        assert worker["frozen"] > 10_000  # the daemon froze what it imported; the children inherit it
        assert worker["mlflow_packages"]  # built by the daemon: no worker scans the installed packages
    assert seen["gc"] == ["Copy", "MarkSweepCompact"]  # -XX:+UseSerialGC's young and old collectors


_PLANNERS_SCRIPT = """
import json
import os
import time
from pyspark.sql.datasource import DataSource, DataSourceReader
from rtml.infra.config.settings import load_settings
from rtml.pipelines.planner_daemons import stop_planners
from rtml.pipelines.spark_io import spark_session
from tests.helpers import pids_alive, spark_python_under


class Numbers(DataSource):
    @classmethod
    def name(cls):
        return "numbers"

    def schema(self):
        return "n int"

    def reader(self, schema):
        return Reader()


class Reader(DataSourceReader):
    def read(self, partition):
        yield from ((i,) for i in range(5))


spark = spark_session(load_settings(use_default_file=False), "planners-test")
spark.dataSource.register(Numbers)
first = spark.read.format("numbers").load().count()
spark.sparkContext.parallelize(range(2), 2).map(lambda x: x).count()  # a task worker too
before = spark_python_under(os.getpid())
stopped = stop_planners(spark)
for _ in range(100):  # SIGTERM to each daemon, which ends its workers: gone within moments
    left = sorted(before[p] for p in pids_alive(list(before)) if before[p] != "pyspark.worker")
    if not left:
        break
    time.sleep(0.1)
tasks = sorted(before[p] for p in pids_alive(list(before)) if before[p] == "pyspark.worker")
again = spark.read.format("numbers").load().count()  # Spark starts the planners again by itself
print("SEEN " + json.dumps({
    "counts": [first, again], "before": sorted(before.values()), "stopped": stopped, "left": left,
    "tasks": tasks, "restarted": sorted(spark_python_under(os.getpid()).values()),
}))
spark.stop()
"""


def test_stopped_planning_processes_leave_and_come_back_when_needed(tmp_path: Path) -> None:
    """Once a query is planned, rtml stops the daemons (and idle workers) Spark keeps for data source
    planning; a later read makes Spark start them again, with the same result."""
    env = _env(tmp_path)  # the repository on the path too: the script uses tests.helpers
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env["PYTHONPATH"]])
    seen = _seen(tmp_path, _PLANNERS_SCRIPT, env, "SEEN ")
    assert seen["counts"] == [5, 5]
    kinds = ["pyspark.sql.worker.create_data_source", "pyspark.sql.worker.plan_data_source_read"]
    for kind in kinds:
        assert seen["before"].count(kind) == 2  # a daemon and its idle worker
        assert kind in seen["stopped"]
        assert kind in seen["restarted"]  # the second read planned through new processes
    assert seen["left"] == []  # every planning process exited (pids checked, not the tree)
    tasks = [m for m in seen["before"] if m == "pyspark.worker"]
    assert len(tasks) >= 3 and seen["tasks"] == tasks  # rtml's task daemon and its workers all stay
