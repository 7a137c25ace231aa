"""Peak RSS of the scoring job as a user runs it: `rtml score --available-now` in its own process
(no bootstrap or benchmark code in its driver) over a backlog on a fresh local stack. JSON on stdout.

    python benchmarks/score_rss.py [--events 400000] [--env NAME=VALUE ...]

Starts its own broker, MLflow and Prefect on free ports in a temporary state dir (`rtml up`), then
`rtml bootstrap`, `rtml produce -n N`, and samples the `rtml score` process tree (driver, JVM, Python
workers) every 0.25 s from /proc until the backlog is scored; `rtml down` at the end. ``--env``
adds variables to every ``rtml`` command's environment, e.g. a configuration to compare:
``--env 'RTML_SPARK__CONF={"spark.python.factory.idleWorkerMaxPoolSize": "2"}'``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peer import TreeRss  # noqa: E402

RTML = str(Path(sys.executable).with_name("rtml"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(env: dict[str, str], *args: str) -> None:
    proc = subprocess.run([RTML, *args, "--json"], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"rtml {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-500:]}")


def measure(events: int, extra_env: dict[str, str] | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="rtml-rss-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTML_")}
        env |= {"RTML_STATE_DIR": tmp, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        env |= {f"RTML_PORTS__{k}": str(_free_port()) for k in ("KAFKA", "MLFLOW", "PREFECT")}
        env["RTML_METRICS__PORT"] = str(_free_port())
        env |= extra_env or {}
        try:
            _cli(env, "up")
            _cli(env, "bootstrap")
            _cli(env, "produce", "-n", str(events))
            t0 = time.monotonic()
            job = subprocess.Popen(
                [RTML, "score", "--available-now", "--json"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            with TreeRss(job.pid) as rss:
                _, stderr = job.communicate(timeout=3600)
            if job.returncode:
                raise SystemExit(f"rtml score failed ({job.returncode}): {stderr[-500:]}")
            return {"events": events, "seconds": round(time.monotonic() - t0, 1), **rss.report()}
        finally:
            subprocess.run([RTML, "down", "--json"], env=env, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=400_000)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the rtml commands")
    args = ap.parse_args()
    if any("=" not in e for e in args.env):
        ap.error("--env takes NAME=VALUE")
    extra = dict(e.split("=", 1) for e in args.env)
    shown = {k: "***" if any(w in k.upper() for w in ("URL", "PASSWORD", "SECRET", "TOKEN")) else v
             for k, v in extra.items()}  # fmt: skip
    print(json.dumps({"benchmark": "score_rss", "env": shown, **measure(args.events, extra)}))


if __name__ == "__main__":
    main()
