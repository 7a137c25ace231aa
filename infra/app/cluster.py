"""The cluster profile: one machine as a small cluster (``rtml up --profile cluster``).

A Spark standalone master and ``cluster.workers`` workers (from the pyspark wheel's ``spark-class``),
a private PostgreSQL, MLflow and Prefect servers on it, an S3-compatible object store (SeaweedFS)
holding the Delta tables (``spark.table_root = s3://rtml/tables``), and the embedded broker
(``stack.up``), all on 127.0.0.1 with free ports. Each server runs in its own session with no
inherited descriptors; its pid and kernel start time are recorded under ``<state_dir>/run/cluster``
so ``down`` signals only processes that are still ours. The endpoints go to
``<state_dir>/run/profile.json`` (mode 0600: it holds the object store's keys), which later commands
with the same state dir read as settings (see ``rtml.infra.config.profile``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from rtml.infra.app import stack
from rtml.infra.app.objectstore import ObjectStoreError, start_object_store
from rtml.infra.app.postgres import PostgresError, start_postgres, stop_postgres
from rtml.infra.app.stack import StackError, _alive, _proc_start, _stop_group
from rtml.infra.config.files import replace_file
from rtml.infra.config.profile import read_profile, remove_profile, write_profile
from rtml.infra.config.settings import Settings

PROFILE = "cluster"
_SERVERS = ("mlflow", "prefect")  # on PostgreSQL: stopped before it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dir(settings: Settings) -> Path:
    return settings.state_dir / "run" / PROFILE


def _ours(settings: Settings, name: str) -> dict | None:
    """The record of a server we started, if its pid is still alive with the recorded start time."""
    try:
        rec = json.loads((_dir(settings) / f"{name}.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    pid, start = rec.get("pid"), rec.get("proc_start")
    ok = isinstance(pid, int) and start is not None and _alive(pid) and _proc_start(pid) == start
    return rec if ok else None


def _record(settings: Settings, name: str, pid: int, **extra: object) -> dict:
    rec = {"name": name, "pid": pid, "proc_start": _proc_start(pid), "started_at": time.time(), **extra}
    replace_file(_dir(settings) / f"{name}.json", json.dumps(rec))
    return rec


def _daemon(settings: Settings, name: str, cmd: list[str], env: dict[str, str], **extra: object) -> dict:
    log = settings.state_dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: down stops its children too
            close_fds=True,  # never hold the caller's descriptors (a flock) for its whole life
            cwd=settings.state_dir,
        )
    return _record(settings, name, proc.pid, log=str(log.resolve()), **extra)


def _get_json(url: str) -> dict | None:
    try:
        return requests.get(url, timeout=2).json()
    except (requests.RequestException, ValueError):
        return None


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _explicit(settings: Settings, profile: dict | None, section: str, key: str) -> bool:
    """Set by the user (file, environment, flag), not by the profile's own record."""
    value = getattr(getattr(settings, section), key)
    recorded = ((profile or {}).get("settings") or {}).get(section, {}).get(key)
    return key in getattr(settings, section).model_fields_set and value is not None and value != recorded


def health(settings: Settings) -> dict[str, dict]:
    """Each recorded server: {url, pid, managed, healthy}; the master's JSON decides for Spark."""
    profile = read_profile(settings.state_dir) or {}
    state = _get_json(profile.get("master_json", "")) if profile.get("master_json") else None
    alive_ui = {w.get("webuiaddress") for w in (state or {}).get("workers", []) if w["state"] == "ALIVE"}
    out = {}
    for f in sorted(_dir(settings).glob("*.json")):
        name = f.stem
        rec = _ours(settings, name)
        url = json.loads(f.read_text()).get("url", "")
        if name == "spark-master":
            ok = state is not None
        elif name.startswith("spark-worker"):
            ok = json.loads(f.read_text()).get("webui") in alive_ui
        elif name in ("postgres", "objectstore"):
            ok = stack._tcp_ok("127.0.0.1", int(url.rsplit(":", 1)[1]))
        else:
            ok = _http_ok(url.rstrip("/") + "/health")
        out[name] = {"url": url, "external": False, "healthy": rec is not None and ok}
        out[name] |= {"pid": rec["pid"] if rec else None, "managed": rec is not None, "profile": PROFILE}
    return out


def _with_profile(settings: Settings, values: dict) -> Settings:
    """The settings later commands will load: the profile's endpoints under explicit settings."""
    update = {section: getattr(settings, section).model_copy(update=keys) for section, keys in values.items()}
    return settings.model_copy(update=update)


def up(settings: Settings, timeout_s: float | None = None) -> dict:
    """Start (or reuse) the cluster profile; return what `rtml up` prints. On failure, stop what
    this call started and raise StackError."""
    timeout = timeout_s or settings.cluster.start_timeout_s
    profile = read_profile(settings.state_dir)
    for section, key in (("spark", "master"), ("mlflow", "tracking_uri"), ("prefect", "api_url")):
        if _explicit(settings, profile, section, key):
            raise StackError(
                f"the cluster profile starts its own {section}: unset {section}.{key} "
                f"(RTML_{section.upper()}__{key.upper()}) or run `rtml up` without --profile"
            )
    if profile and profile.get("profile") == PROFILE:
        now = health(settings)
        if now and all(s["healthy"] for s in now.values()):
            result = stack.up(settings, timeout_s=timeout)  # the broker: reused or restarted
            for entry in now.values():
                entry["action"] = "reused"
            return {"profile": PROFILE, **result, "services": {**result["services"], **now}}
    kafka_port_set = _explicit(settings, profile, "ports", "kafka")  # a left-over profile's is not
    down(settings)  # what is left of an earlier, broken run (only our own processes)
    return _start(settings, timeout, kafka_port_set)


def _start(settings: Settings, timeout: float, kafka_port_set: bool = False) -> dict:
    import pyspark

    c, t0 = settings.cluster, time.monotonic()
    root = settings.state_dir / PROFILE
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTML_")}
    env |= {"PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    spark_class = str(Path(pyspark.__file__).parent / "bin" / "spark-class")
    port, ui = _free_port(), _free_port()
    master, master_json = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}/json/"
    deploy = "org.apache.spark.deploy"
    kafka_port = settings.ports.kafka if kafka_port_set else _free_port()
    values = {"spark": {"master": master}, "ports": {"kafka": kafka_port}}
    try:
        cmd = [spark_class, f"{deploy}.master.Master", "--host", "127.0.0.1", "--port", str(port)]
        _daemon(settings, "spark-master", [*cmd, "--webui-port", str(ui)], env, url=master)
        for i in range(1, c.workers + 1):
            work, wui = root / f"worker{i}", _free_port()
            work.mkdir(exist_ok=True)
            cmd = [spark_class, f"{deploy}.worker.Worker", master, "--host", "127.0.0.1"]
            cmd += ["--cores", str(c.cores), "--memory", c.memory, "--webui-port", str(wui)]
            webui = f"http://127.0.0.1:{wui}"
            cmd += ["--work-dir", str(work)]
            _daemon(settings, f"spark-worker{i}", cmd, env, url=webui, webui=webui)
        pg_port = _free_port()
        try:  # while the JVMs start
            pg = start_postgres(pg_port, ("mlflow", "prefect", "rtml_state"))
        except PostgresError as exc:
            raise StackError(str(exc)) from None
        _record(settings, "postgres", pg["pid"], url=f"postgresql://127.0.0.1:{pg_port}", base=pg["base"])
        db = f"postgres:{pg['password']}@127.0.0.1:{pg_port}"
        mlflow_port, prefect_port = _free_port(), _free_port()
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        cmd = [stack._bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port)]
        cmd += ["--workers", "1", "--backend-store-uri", f"postgresql://{db}/mlflow"]
        cmd += ["--artifacts-destination", str((root / "artifacts").resolve())]
        _daemon(settings, "mlflow", cmd, env | stack.mlflow_server_env(), url=mlflow_url)
        prefect_api = f"http://127.0.0.1:{prefect_port}/api"
        cmd = [stack._bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)]
        prefect_env = env | {
            "PREFECT_HOME": str((root / "prefect-home").resolve()),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{db}/prefect",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
        }
        _daemon(settings, "prefect", cmd, prefect_env, url=prefect_api)
        values |= {"mlflow": {"tracking_uri": mlflow_url}, "prefect": {"api_url": prefect_api}}
        values["scoring"] = {"state_url": f"postgresql://{db}/rtml_state"}  # entity state, any executor
        keys = {"access_key": secrets.token_hex(8), "secret_key": secrets.token_hex(20)}
        try:  # Delta tables (scores, quarantine, labelled) on S3 while the servers start
            store = start_object_store(root / "objectstore", bucket="rtml", **keys, timeout_s=timeout)
        except ObjectStoreError as exc:
            raise StackError(f"objectstore: {exc}") from None
        _record(settings, "objectstore", store.pid, url=store.endpoint, log=str(store.log_path))
        values["spark"] |= {"table_root": "s3://rtml/tables", "storage_options": store.storage_options()}
        profile = {"profile": PROFILE, "settings": values, "master_json": master_json, "workers": c.workers}
        write_profile(settings.state_dir, profile)
        _wait_healthy(settings, c.workers, t0 + timeout)
        if not kafka_port_set:
            # picked again now that the servers above run: their JVMs bind ephemeral ports of their
            # own while they start, and one took the broker's port picked before them (seen once)
            values["ports"]["kafka"] = _free_port()
            write_profile(settings.state_dir, profile)
        left = max(30.0, t0 + timeout - time.monotonic())
        result = stack.up(_with_profile(settings, values), timeout_s=left)  # the broker only
    except BaseException:
        down(settings)
        raise
    services = {**result["services"], **health(settings)}
    for name in health(settings):
        services[name]["action"] = "started"
    return {
        "profile": PROFILE,
        **result,
        "services": services,
        "spark_master": master,
        "master_json": master_json,
        "ready_s": round(time.monotonic() - t0, 1),
    }


def _wait_healthy(settings: Settings, workers: int, deadline: float) -> None:
    while True:
        now = health(settings)
        dead = [n for n, s in now.items() if not s["managed"]]
        if dead:
            raise StackError(f"{', '.join(dead)}: exited during start-up; see {settings.state_dir}/logs")
        pending = [n for n, s in now.items() if not s["healthy"]]
        if not pending and sum(n.startswith("spark-worker") for n in now) == workers:
            return
        if time.monotonic() > deadline:
            raise StackError(f"{', '.join(pending)}: not healthy in time; see {settings.state_dir}/logs")
        time.sleep(0.5)


def down(settings: Settings) -> dict:
    """Stop the servers the profile recorded (a pid that now belongs to another process is left
    alone), PostgreSQL after the servers on it, the master last; forget the profile."""
    stopped, not_ours = {}, {}
    rank = {"mlflow": 0, "prefect": 0, "objectstore": 0, "postgres": 1, "spark-master": 3}
    files = sorted(_dir(settings).glob("*.json"), key=lambda f: (rank.get(f.stem, 2), f.stem))
    recs = {f.stem: _ours(settings, f.stem) for f in files}  # before any signal
    signalled: set[int] = set()
    for f in files:
        name, rec = f.stem, recs[f.stem]
        if rec is not None and name != "postgres" and rank.get(name, 2) not in signalled:
            for other, r in recs.items():  # the servers of one rank stop in parallel
                if r is not None and other != "postgres" and rank.get(other, 2) == rank.get(name, 2):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(r["pid"], signal.SIGTERM)
            signalled.add(rank.get(name, 2))
        try:
            raw = json.loads(f.read_text())
        except ValueError:
            raw = {}
        if name == "postgres" and raw.get("base"):
            log = settings.state_dir / "logs" / "postgres.log"
            stop_postgres(rec["pid"] if rec else None, raw["base"], keep_log=log)
        elif rec is not None:
            _stop_group(rec["pid"])
        if rec is not None:
            stopped[name] = rec["pid"]
        elif isinstance(raw.get("pid"), int) and _alive(raw["pid"]):
            not_ours[name] = raw["pid"]
        f.unlink(missing_ok=True)
    remove_profile(settings.state_dir)
    return {"stopped": stopped, "not_ours": not_ours}
