"""Supervise the streaming scoring job: run it, watch it, restart it from its checkpoint.

The job runs as a child process (``rtml score``) in its own process group, so a crash of the job
or its JVM never takes the supervisor down and a stop ends the whole group. Every heartbeat the
supervisor reads the job's progress (``<sink_root>/_progress.json``: input and processed rates,
batch duration, offsets) and measures consumer lag against the topic's true end offsets. When the
job dies it is restarted, from the same checkpoint, after an exponential backoff; more than
``max_restarts`` failures in a row (no batch completed in between) is a failure of the supervisor.

>>> flat_env({"kafka": {"topics": {"events": "e"}}, "spark": {"conf": {"a": "1"}}, "x": None})
{'RTML_KAFKA__TOPICS__EVENTS': 'e', 'RTML_SPARK__CONF': '{"a": "1"}'}
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtml.infra.config.files import replace_file
from rtml.infra.config.settings import Settings

log = logging.getLogger(__name__)
SUPERVISED_PID = "scoring-supervised.json"
STOP_FILE = "scoring.stop"
# what every heartbeat reports of the job's progress (None until its first micro-batch)
PROGRESS_KEYS = (
    "batch_id",
    "input_rows",
    "input_rows_per_s",
    "processed_rows_per_s",
    "batch_duration_ms",
    "written_at_ms",
)  # touch <state_dir>/run/scoring.stop to stop a supervised job cleanly


def flat_env(overrides: dict[str, Any], prefix: str = "RTML_") -> dict[str, str]:
    """Settings overrides as ``RTML_*`` environment variables (nested keys joined by ``__``)."""
    out: dict[str, str] = {}
    for key, value in overrides.items():
        name = f"{prefix}{key.upper()}"
        if isinstance(value, dict) and key != "conf":
            out.update(flat_env(value, name + "__"))
        elif isinstance(value, dict | list):
            out[name] = json.dumps(value)
        elif value is not None:
            out[name] = str(value)
    return out


def consumer_lag(settings: Settings, end_offset: dict[str, dict[str, int]] | None) -> int | None:
    """Events on the events topic not yet processed by the job (None if it cannot be measured)."""
    from kafka import TopicPartition

    from rtml.infra.config.kafka_clients import connection_options, make_consumer
    from rtml.pipelines.kafka_source import true_end_offsets

    topic = settings.kafka.topics.events
    done = (end_offset or {}).get(topic, {})
    try:
        consumer = make_consumer(connection_options(settings))
    except Exception:  # noqa: BLE001 - broker unreachable: no figure, the heartbeat still goes out
        return None
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        ends = true_end_offsets(consumer, tps)
        return int(sum(max(0, ends[tp] - int(done.get(str(tp.partition), 0))) for tp in tps))
    finally:
        consumer.close()


@dataclass
class SupervisorReport:
    starts: int = 0
    restarts: int = 0
    exits: list[int] = field(default_factory=list)
    heartbeats: int = 0
    last_progress: dict[str, Any] | None = None
    lag: int | None = None
    stopped_by: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ScoringSupervisor:
    """Keeps one scoring job alive until ``stop`` is set or ``run_seconds`` pass."""

    def __init__(
        self,
        settings: Settings,
        overrides: dict[str, Any] | None = None,
        config_file: str | None = None,
        heartbeat_s: float = 10.0,
        backoff_s: float = 2.0,
        max_backoff_s: float = 60.0,
        max_restarts: int = 5,
    ) -> None:
        self.settings = settings
        self.env = {**os.environ, **flat_env(overrides or {})}
        self.command = [str(Path(sys.executable).parent / "rtml")]
        if config_file:
            self.command += ["--config", config_file]
        self.command += ["score", "--json"]
        self.heartbeat_s = heartbeat_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_restarts = max_restarts
        self.report = SupervisorReport()
        self.proc: subprocess.Popen | None = None

    @property
    def pid_file(self) -> Path:
        return self.settings.state_dir / "run" / SUPERVISED_PID

    @property
    def stop_file(self) -> Path:
        return self.settings.state_dir / "run" / STOP_FILE

    def _start(self) -> None:
        log_dir = self.settings.state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / "scoring.log", "ab") as log:
            self.proc = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=log, start_new_session=True
            )
        self.report.starts += 1
        # replaced whole, never truncated in place: a reader (on-call tooling, the tests) polling it
        # during a restart read an empty file once (CI, 2026-12-02)
        replace_file(
            self.pid_file, json.dumps({"pid": self.proc.pid, "started_at_ms": int(time.time() * 1000)})
        )

    def _stop_child(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the job stops its query cleanly on SIGTERM
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def progress(self) -> dict[str, Any] | None:
        from rtml.pipelines.score_job import PROGRESS_FILE

        path = self.settings.sink_root / PROGRESS_FILE
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def heartbeat(self) -> dict[str, Any]:
        progress = self.progress()
        self.report.heartbeats += 1
        self.report.last_progress = progress
        self.report.lag = consumer_lag(self.settings, (progress or {}).get("end_offset"))
        return {
            "alive": self.proc is not None and self.proc.poll() is None,
            "pid": self.proc.pid if self.proc else None,
            "starts": self.report.starts,
            "restarts": self.report.restarts,
            "consumer_lag": self.report.lag,
            **{k: (progress or {}).get(k) for k in PROGRESS_KEYS},
        }

    def run(
        self,
        stop: threading.Event | None = None,
        run_seconds: float | None = None,
        on_heartbeat: Callable[[dict[str, Any]], None] | None = None,
        on_restart: Callable[[dict[str, Any]], None] | None = None,
    ) -> SupervisorReport:
        stop = stop or threading.Event()
        self.stop_file.unlink(missing_ok=True)
        t0 = time.monotonic()
        failures = 0  # consecutive failures without a completed batch in between
        self._start()
        next_beat = time.monotonic() + self.heartbeat_s
        try:
            while True:
                if self.stop_file.exists():
                    stop.set()
                if stop.is_set() or (run_seconds is not None and time.monotonic() - t0 >= run_seconds):
                    self.report.stopped_by = "stop" if stop.is_set() else "run_seconds"
                    break
                rc = self.proc.poll() if self.proc else None
                if rc is not None:
                    self.report.exits.append(rc)
                    before = (self.report.last_progress or {}).get("batch_id")
                    failures = 0 if (self.progress() or {}).get("batch_id") != before else failures
                    failures += 1
                    if failures > self.max_restarts:
                        raise RuntimeError(
                            f"scoring job exited {failures} times in a row (last exit code {rc}); "
                            f"see {self.settings.state_dir / 'logs' / 'scoring.log'}"
                        )
                    delay = min(self.backoff_s * 2 ** (failures - 1), self.max_backoff_s)
                    event = {"exit_code": rc, "restart_in_s": delay, "consecutive_failures": failures}
                    if on_restart:
                        on_restart(event)
                    if stop.wait(delay):
                        continue
                    self._start()
                    self.report.restarts += 1
                if time.monotonic() >= next_beat:
                    try:
                        beat = self.heartbeat()
                        if on_heartbeat:
                            on_heartbeat(beat)
                    except Exception as exc:  # noqa: BLE001 - monitoring trouble never stops scoring
                        log.warning("heartbeat failed: %s: %s", type(exc).__name__, exc)
                    next_beat = time.monotonic() + self.heartbeat_s
                stop.wait(0.5)
        finally:
            self._stop_child()
            self.pid_file.unlink(missing_ok=True)
            self.stop_file.unlink(missing_ok=True)
        return self.report
