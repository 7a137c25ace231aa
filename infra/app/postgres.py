"""A private PostgreSQL server on 127.0.0.1 for the cluster profile (Debian's `postgresql` package).

The data directory is a fresh temporary directory (the server refuses to run as root: as root it is
owned by, and the server runs as, the `postgres` user). Its databases live as long as the profile:
stopping the server removes the directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL_HINT = (
    "PostgreSQL binaries (initdb, pg_ctl) not found: install them with `apt-get install -y postgresql`"
)


class PostgresError(Exception):
    """PostgreSQL could not be started; message is one line."""


def pg_bin() -> Path | None:
    """Directory of initdb/pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def _run(cmd: str, timeout: float = 120) -> None:
    argv = ["su", "postgres", "-s", "/bin/sh", "-c", cmd] if os.geteuid() == 0 else ["sh", "-c", cmd]
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, close_fds=True
        )
    except subprocess.TimeoutExpired:
        raise PostgresError(f"postgres: `{cmd.split()[0]}` timed out after {timeout:.0f}s") from None
    if out.returncode != 0:
        raise PostgresError(f"postgres: {cmd.split()[0]} failed: {(out.stderr or out.stdout).strip()[-300:]}")


def start_postgres(port: int, databases: tuple[str, ...]) -> dict:
    """Start a server on 127.0.0.1:port with the given databases; return its record:
    {pid (the postmaster), base (temp dir), port, password, log}. Raises PostgresError."""
    binaries = pg_bin()
    if binaries is None:
        raise PostgresError(INSTALL_HINT)
    base = Path(tempfile.mkdtemp(prefix="rtml-pg-"))
    data, password = base / "data", secrets.token_hex(12)
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off"
    log = base / "server.log"
    try:
        _run(
            f"{binaries}/initdb -D {data} -U postgres --pwfile={pwfile} --auth-local=trust "
            f"--auth-host=scram-sha-256 -E UTF8 >{base}/initdb.log 2>&1"
        )
        pwfile.unlink()
        _run(f"{binaries}/pg_ctl -D {data} -w -l {log} -o '{opts}' start")
        pid = int((data / "postmaster.pid").read_text().split()[0])
        for db in databases:
            _run(f"{binaries}/createdb -h {base} -p {port} -U postgres {db}")
    except BaseException:
        with contextlib.suppress(PostgresError):
            _run(f"{binaries}/pg_ctl -D {data} -m immediate -w stop", timeout=60)
        shutil.rmtree(base, ignore_errors=True)
        raise
    return {"pid": pid, "base": str(base), "port": port, "password": password, "log": str(log)}


def _gone(pid: int) -> bool:
    try:  # a zombie (not reaped by an init that does not reap) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def stop_postgres(pid: int | None, base: str, keep_log: Path | None = None) -> None:
    """Fast shutdown of the postmaster (``pid`` already checked to be ours), then remove its dir.
    SIGINT = fast shutdown; SIGQUIT = immediate (its backends go too); SIGKILL last."""
    if pid is not None:
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not _gone(pid):
                time.sleep(0.2)
            if _gone(pid):
                break
    if keep_log is not None:
        with contextlib.suppress(OSError):
            keep_log.write_text((Path(base) / "server.log").read_text(errors="replace")[-20_000:])
    # only a directory this module made
    if Path(base).name.startswith("rtml-pg-"):
        shutil.rmtree(base, ignore_errors=True)
