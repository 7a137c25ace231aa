"""Which Spark configuration wins: what the launcher set, then rtml's settings (pure, no Spark import).

The launcher is whatever started Spark before rtml asked for a session: ``spark-submit`` flags
(``--master``, ``--conf``), ``spark-defaults.conf`` (in ``SPARK_CONF_DIR``, else ``$SPARK_HOME/conf``),
``PYSPARK_SUBMIT_ARGS``, or a SparkContext already running in the process. A key set there is kept;
rtml's settings (``spark.*``) fill only the keys left unset.

>>> fill_unset({"spark.master": "spark://m:7077"}, {"spark.master": "local[2]", "spark.ui.enabled": "false"})
{'spark.ui.enabled': 'false'}
>>> parse_defaults("spark.master  spark://m:7077\\n# comment\\nspark.sql.shuffle.partitions=4\\n")
{'spark.master': 'spark://m:7077', 'spark.sql.shuffle.partitions': '4'}
>>> submit_args_conf("--master local[3] --conf spark.a=1 --conf=spark.b=2 pyspark-shell")
{'spark.master': 'local[3]', 'spark.a': '1', 'spark.b': '2'}
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path

# What executors need to reach MLflow, forwarded from the driver's environment (credentials: never logged)
MLFLOW_ENV = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
)
# Keys whose values are masked in anything rtml logs (Spark's own spark.redaction.regex, by default
# secret|password|token|access.key, masks the same ones in its UI and event log).
_SECRET_KEY = re.compile(r"(?i)secret|password|token|credential|jaas|keystore\.key|access.?key")
MASK = "*********(redacted)"


def executor_env(tracking_uri: str, env: Mapping[str, str]) -> dict[str, str]:
    """``spark.executorEnv.*`` entries: the driver's tracking URI and MLflow credentials from ``env``.

    >>> env = executor_env("http://mlflow:5000", {"MLFLOW_TRACKING_TOKEN": "t", "HOME": "/root"})
    >>> env["spark.executorEnv.MLFLOW_TRACKING_URI"], env["spark.executorEnv.MLFLOW_TRACKING_TOKEN"], len(env)
    ('http://mlflow:5000', 't', 2)
    """
    out = {"spark.executorEnv.MLFLOW_TRACKING_URI": tracking_uri}
    for name in MLFLOW_ENV:
        if env.get(name):
            out[f"spark.executorEnv.{name}"] = env[name]
    return out


def redact(conf: Mapping[str, str]) -> dict[str, str]:
    """``conf`` with the values of secret-looking keys masked, for logs and dumps.

    >>> redact({"spark.executorEnv.MLFLOW_TRACKING_PASSWORD": "p", "spark.master": "local[2]"})
    {'spark.executorEnv.MLFLOW_TRACKING_PASSWORD': '*********(redacted)', 'spark.master': 'local[2]'}
    """
    return {k: MASK if _SECRET_KEY.search(k) else v for k, v in conf.items()}


def describe(conf: Mapping[str, str]) -> str:
    """One log line's worth of ``key=value`` pairs, secrets masked."""
    return ", ".join(f"{k}={v}" for k, v in sorted(redact(conf).items()))


def fill_unset(launcher: Mapping[str, str], ours: Mapping[str, str]) -> dict[str, str]:
    """The entries of ``ours`` whose keys the launcher left unset (the launcher wins)."""
    return {k: v for k, v in ours.items() if k not in launcher}


def parse_defaults(text: str) -> dict[str, str]:
    """Entries of a ``spark-defaults.conf`` (``key value`` or ``key=value``, ``#`` comments)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"\s*=\s*|\s+", line, maxsplit=1)
        out[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return out


def submit_args_conf(args: str) -> dict[str, str]:
    """``--master`` and ``--conf k=v`` of ``PYSPARK_SUBMIT_ARGS`` as configuration entries."""
    out: dict[str, str] = {}
    words = shlex.split(args or "")
    i = 0
    while i < len(words):
        word, value = words[i], None
        if "=" in word and word.startswith("--") and word.split("=", 1)[0] in ("--master", "--conf"):
            word, value = word.split("=", 1)
        elif word in ("--master", "--conf") and i + 1 < len(words):
            value = words[i + 1]
            i += 1
        if word == "--master" and value is not None:
            out["spark.master"] = value
        elif word == "--conf" and value is not None and "=" in value:
            k, v = value.split("=", 1)
            out[k] = v
        i += 1
    return out


def defaults_file(env: Mapping[str, str], spark_home: str | None) -> Path | None:
    """The ``spark-defaults.conf`` Spark reads: ``$SPARK_CONF_DIR``, else ``$SPARK_HOME/conf``."""
    conf_dir = env.get("SPARK_CONF_DIR") or (str(Path(spark_home) / "conf") if spark_home else None)
    if not conf_dir:
        return None
    path = Path(conf_dir) / "spark-defaults.conf"
    return path if path.is_file() else None


def launcher_conf_before_jvm(env: Mapping[str, str], spark_home: str | None) -> dict[str, str]:
    """What a JVM that pyspark launches itself will hold: the defaults file, then PYSPARK_SUBMIT_ARGS."""
    path = defaults_file(env, spark_home)
    conf = parse_defaults(path.read_text(encoding="utf-8")) if path else {}
    return conf | submit_args_conf(env.get("PYSPARK_SUBMIT_ARGS", ""))


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")  # s3a://b/x (a Path keeps it as s3a:/b/x)


def is_local_path(path: str) -> bool:
    """A path on this machine's disk: no URI scheme, or ``file:``.

    >>> is_local_path(".rtml/checkpoints"), is_local_path("file:///data"), is_local_path("s3a://b/cp")
    (True, True, False)
    """
    m = _SCHEME.match(path)
    return m is None or m.group(1).lower() == "file"


def shared_storage_warning(master: str, paths: Mapping[str, str]) -> str | None:
    """One line when a non-local master would keep checkpoints or sinks on the driver's local disk."""
    if master.startswith("local"):
        return None
    local = [f"{name}={path}" for name, path in paths.items() if is_local_path(path)]
    if not local:
        return None
    return (
        f"spark master {master} is not local but {', '.join(local)} "
        f"{'is a local path' if len(local) == 1 else 'are local paths'}: a multi-host cluster needs shared "
        "storage (s3a://, hdfs://, or the same network mount on every host) for checkpoints and sinks"
    )


_GC_FLAG = re.compile(r"-XX:\+Use\w*GC\b")
#: Spark's Python daemon that imports the scoring libraries before forking (``rtml.pipelines.worker_daemon``)
WORKER_DAEMON = "rtml.pipelines.worker_daemon"
#: environment variables the JVM's launchers read Java options from
JAVA_OPTION_VARS = ("JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "SPARK_SUBMIT_OPTS")


def is_one_jvm(master: str) -> bool:
    """True for ``local`` and ``local[...]`` masters: one JVM runs the driver and every task.

    >>> [is_one_jvm(m) for m in ("local", "local[2]", "local-cluster[2,1,1024]", "spark://h:7077")]
    [True, True, False, False]
    """
    return master == "local" or master.startswith("local[")


def local_jvm_defaults(
    master: str, env: Mapping[str, str], *java_options: str, py_files: str = ""
) -> tuple[dict[str, str], str]:
    """Spark entries and a JVM flag rtml adds when the job runs in one local JVM (:func:`is_one_jvm`).

    The Python daemon only when rtml is installed, not shipped with ``--py-files``
    (``spark.submit.pyFiles``: those reach ``sys.path`` after the daemon would import rtml); on a
    cluster executors may get rtml that way, so the daemon stays Spark's. The serial collector only
    when no collector is chosen already (two stop the JVM from starting): in ``java_options`` (e.g.
    ``spark.driver.defaultJavaOptions``) or the launchers' variables (:data:`JAVA_OPTION_VARS`);
    a cluster driver keeps the JVM's own.

    >>> local_jvm_defaults("local[2]", {})
    ({'spark.python.daemon.module': 'rtml.pipelines.worker_daemon'}, '-XX:+UseSerialGC')
    >>> local_jvm_defaults("local[2]", {"JDK_JAVA_OPTIONS": "-XX:+UseZGC"}, py_files="rtml.zip")
    ({}, '')
    >>> local_jvm_defaults("spark://m:7077", {})
    ({}, '')
    """
    if not is_one_jvm(master):
        return {}, ""
    chosen = [*java_options, *(env.get(name, "") for name in JAVA_OPTION_VARS)]
    gc = "" if any(_GC_FLAG.search(o or "") for o in chosen) else "-XX:+UseSerialGC"
    return ({} if py_files else {"spark.python.daemon.module": WORKER_DAEMON}), gc
