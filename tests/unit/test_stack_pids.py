"""`rtml down` signals only the processes `rtml up` started: pid and kernel start time must both match."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from rtml.infra.app import stack
from rtml.infra.config.settings import load_settings


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def _record(settings, name: str, pid: int, proc_start: str | None) -> Path:  # noqa: ANN001
    f = stack._pidfile(settings, name)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"pid": pid, "proc_start": proc_start, "command": ["sleep"], "log": "-"}))
    return f


def test_down_stops_its_own_process_and_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    settings = load_settings(use_default_file=False, overrides={"state_dir": tmp_path})
    ours, stranger, unknown = _sleeper(), _sleeper(), _sleeper()
    try:
        names = [svc.name for svc in stack.services(settings)]
        _record(settings, names[0], ours.pid, stack._proc_start(ours.pid))
        _record(settings, names[1], stranger.pid, "1")  # same pid, another start time: a reused pid
        _record(settings, names[2], unknown.pid, None)  # no start time recorded: cannot prove it is ours
        result = stack.down(settings)
        assert result["stopped"] == {names[0]: ours.pid}
        assert result["not_ours"] == {names[1]: stranger.pid, names[2]: unknown.pid}
        assert ours.wait(timeout=20) is not None
        assert stranger.poll() is None and unknown.poll() is None  # never signalled
        assert not any(stack._pidfile(settings, n).exists() for n in names[:3])
    finally:
        for p in (ours, stranger, unknown):
            p.kill()
            p.wait()
