"""Test helpers: free ports, running the CLI, finding our processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

RTML = str(Path(sys.executable).parent / "rtml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess with its own state dir and free ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTML_")}
    env.update(
        {
            "RTML_STATE_DIR": str(state_dir),
            "RTML_PORTS__KAFKA": str(free_port()),
            "RTML_PORTS__MLFLOW": str(free_port()),
            "RTML_PORTS__PREFECT": str(free_port()),
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
    )
    env.update(extra)
    return env


def rtml(
    *args: str, env: dict[str, str], timeout: float = 300, cwd: Path | None = None
) -> tuple[int, dict | None, str]:
    """Run `rtml ARGS --json`; return (exit code, parsed JSON or None, stderr)."""
    proc = subprocess.run([RTML, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return proc.returncode, (json.loads(lines[-1]) if lines else None), proc.stderr


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z":
            continue
        alive.append(pid)
    return alive


def group_members(pgid: int) -> list[int]:
    """Every live process in process group pgid (the service and its children)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().split(")")[-1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(d.name))
    return out
