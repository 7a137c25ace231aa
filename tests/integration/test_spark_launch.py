"""spark-submit's flags and spark-defaults.conf win over rtml's settings in spark_session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

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


def test_spark_conf_dir_defaults_win_over_settings(tmp_path: Path) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "spark-defaults.conf").write_text("spark.sql.shuffle.partitions 3\n")
    script = tmp_path / "launch.py"
    script.write_text(_SCRIPT)
    env = _env(tmp_path) | {"SPARK_CONF_DIR": str(conf_dir)}
    conf = _conf(
        subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180)
    )
    assert conf["shuffle"] == "3"  # the defaults file's
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
names = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
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
            {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"},
        ),
        # the user's own variable wins, rtml sets the other one
        (
            {"RTML_SPARK__MALLOC_MMAP_THRESHOLD": "131072", "MALLOC_MMAP_THRESHOLD_": "65536"},
            {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"},
        ),
        # the default, 0: rtml sets none
        ({}, {"MALLOC_MMAP_THRESHOLD_": None, "MALLOC_TRIM_THRESHOLD_": None}),
    ],
)
def test_the_jvm_and_the_python_workers_get_the_malloc_threshold(
    tmp_path: Path, extra: dict[str, str], expected: dict
) -> None:
    script = tmp_path / "malloc.py"
    script.write_text(_MALLOC_SCRIPT)
    env = {k: v for k, v in _env(tmp_path).items() if not k.startswith("MALLOC_")} | extra
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("ENV "))[4:])
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
    yield {
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
    script = tmp_path / "daemon.py"
    script.write_text(_WORKERS_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script)], env=_env(tmp_path), capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("SEEN "))[5:])
    for worker in seen["workers"]:
        assert worker["daemon"] == ["-m", "rtml.pipelines.worker_daemon", "pyspark.worker"]
        assert worker["preloaded"] == ["mlflow.pyfunc", "rtml.pipelines.scorer", "sklearn.linear_model"]
        assert worker["frozen"] > 10_000  # the daemon froze what it imported; the children inherit it
    assert seen["gc"] == ["Copy", "MarkSweepCompact"]  # -XX:+UseSerialGC's young and old collectors
