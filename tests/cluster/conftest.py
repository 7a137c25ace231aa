"""One machine as a small cluster: a Spark standalone master + 2 workers (from the pyspark wheel),
PostgreSQL, MLflow and Prefect servers on PostgreSQL, and the embedded broker, all on 127.0.0.1 with
free ports. Every daemon runs in its own session with no inherited descriptors (a daemon started under
``flock`` would otherwise keep the lock) and teardown stops exactly the process groups it started.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.helpers import free_port, wait_for

SHIM = str(Path(__file__).resolve().parents[2] / ".shim")
INSTALL_HINT = (
    "PostgreSQL binaries (initdb, pg_ctl) not found: install them with `apt-get install -y postgresql`"
)


def pg_bin() -> Path | None:
    """Directory of initdb/pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _pythonpath() -> str:
    parts = [SHIM, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return os.pathsep.join(dict.fromkeys(parts))


@dataclass
class Cluster:
    settings: object  # rtml Settings: broker ports, external MLflow/Prefect, spark master
    master_url: str
    master_json: str
    pg_uri: str
    root: Path
    groups: list[int] = field(default_factory=list)

    def state(self) -> dict:
        return requests.get(self.master_json, timeout=5).json()


def _daemon(cmd: list[str], log: Path, env: dict[str, str], groups: list[int]) -> int:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    groups.append(proc.pid)
    return proc.pid


def _stop_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pgid, os.WNOHANG)
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else f"(no {path})"


def _as_postgres(cmd: str, timeout: float = 120) -> None:
    out = subprocess.run(
        ["su", "postgres", "-s", "/bin/sh", "-c", cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        close_fds=True,
    )
    assert out.returncode == 0, f"{cmd}: {out.stderr[-2000:]}"


@contextlib.contextmanager
def postgres(root: Path) -> Iterator[tuple[str, int]]:
    """A private PostgreSQL server on 127.0.0.1; yields (password, port) of user postgres."""
    binaries = pg_bin()
    if binaries is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    # initdb and the server refuse to run as root: a data dir owned by postgres, outside pytest's
    # 0700 temp dirs
    base = Path(tempfile.mkdtemp(prefix="rtml-pg-"))
    shutil.chown(base, "postgres", "postgres")
    data, password, port = base / "data", secrets.token_hex(12), free_port()
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    shutil.chown(pwfile, "postgres", "postgres")
    _as_postgres(
        f"{binaries}/initdb -D {data} -U postgres --pwfile={pwfile} --auth-local=trust "
        f"--auth-host=scram-sha-256 -E UTF8 >{base}/initdb.log 2>&1"
    )
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off"
    try:
        _as_postgres(f"{binaries}/pg_ctl -D {data} -w -l {base}/server.log -o '{opts}' start")
        for db in ("mlflow", "prefect"):
            _as_postgres(f"{binaries}/createdb -h {base} -p {port} -U postgres {db}")
        yield password, port
    finally:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            _as_postgres(f"{binaries}/pg_ctl -D {data} -m immediate -w stop", timeout=60)
        (root / "postgres.log").write_text(_tail(base / "server.log"))
        shutil.rmtree(base, ignore_errors=True)


def _spark_daemons(root: Path, env: dict[str, str], groups: list[int]) -> tuple[str, str]:
    import pyspark

    spark_class = str(Path(pyspark.__file__).parent / "bin" / "spark-class")
    port, ui = free_port(), free_port()
    master = f"spark://127.0.0.1:{port}"
    deploy = "org.apache.spark.deploy"
    _daemon(
        [
            spark_class,
            f"{deploy}.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        ],
        root / "spark-master.log",
        env,
        groups,
    )
    for i in (1, 2):
        work = root / f"worker{i}"
        work.mkdir()
        cmd = [spark_class, f"{deploy}.worker.Worker", master, "--host", "127.0.0.1", "--cores", "1"]
        cmd += ["--memory", "1536m", "--webui-port", str(free_port()), "--work-dir", str(work)]
        _daemon(cmd, root / f"spark-worker{i}.log", env, groups)
    return master, f"http://127.0.0.1:{ui}/json/"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Spark master + 2 workers, PostgreSQL, MLflow and Prefect on it, and the embedded broker."""
    from rtml.infra.app import stack as stack_mod
    from rtml.infra.config.settings import load_settings

    if pg_bin() is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    root = tmp_path_factory.mktemp("cluster")
    groups: list[int] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RTML_", "SPARK_", "PYSPARK_"))}
    env |= {"PYTHONPATH": _pythonpath(), "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    t0 = time.monotonic()
    try:
        master, master_json = _spark_daemons(root, env, groups)  # JVMs start while PostgreSQL does
        with postgres(root) as (password, pg_port):
            pg = f"postgres:{password}@127.0.0.1:{pg_port}"
            mlflow_port, prefect_port = free_port(), free_port()
            bin_dir = Path(sys.executable).parent
            (root / "artifacts").mkdir()
            _daemon(
                [str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port)]
                + ["--workers", "1", "--backend-store-uri", f"postgresql://{pg}/mlflow"]
                + ["--artifacts-destination", str(root / "artifacts")],
                root / "mlflow.log",
                env,
                groups,
            )
            prefect_env = env | {
                "PREFECT_HOME": str(root / "prefect-home"),
                "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{pg}/prefect",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_ENABLED": "false",
            }
            cmd = [
                str(bin_dir / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(prefect_port),
            ]
            _daemon(cmd, root / "prefect.log", prefect_env, groups)
            mlflow_url = f"http://127.0.0.1:{mlflow_port}"
            prefect_api = f"http://127.0.0.1:{prefect_port}/api"
            settings = load_settings(
                use_default_file=False,
                overrides={
                    "state_dir": root / "stack",
                    "ports": {"kafka": free_port(), "mlflow": free_port(), "prefect": free_port()},
                    "mlflow": {"tracking_uri": mlflow_url},
                    "prefect": {"api_url": prefect_api},
                    "spark": {"master": master},
                },
            )

            def workers_alive() -> bool:
                try:
                    state = requests.get(master_json, timeout=2).json()
                except (requests.RequestException, ValueError):
                    return False
                return sum(w["state"] == "ALIVE" for w in state["workers"]) == 2

            for name, ok in (
                ("mlflow", lambda: _http_ok(mlflow_url + "/health")),
                ("prefect", lambda: _http_ok(prefect_api + "/health")),
                ("spark-master", workers_alive),
            ):
                wait_for(ok, 180, lambda name=name: f"{name}: {_tail(root / f'{name}.log')}")
            try:
                stack_mod.up(settings, timeout_s=120)  # external MLflow/Prefect: only the broker starts
                print(f"\ncluster up in {time.monotonic() - t0:.1f} s: {master}, {mlflow_url}, {prefect_api}")
                yield Cluster(settings, master, master_json, f"postgresql://{pg}", root, groups)
            finally:  # the servers go before their database
                stack_mod.down(settings)
                for pgid in reversed(groups):
                    _stop_group(pgid)
    finally:
        for pgid in reversed(groups):  # whatever is left when start-up failed
            _stop_group(pgid)
