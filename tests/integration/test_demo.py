"""`rtml demo` at reduced size on its own stack: the loop closes, and the UIs' backends show it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import requests

from tests.helpers import RTML, rtml, stack_env

pytestmark = pytest.mark.integration


# What the libraries print when nobody stops them: MLflow's run links and tqdm bars, Prefect's log
# lines, Python warnings, Spark's log4j banner, GE's temp-dir line, tracebacks.
LIBRARY_NOISE = re.compile(
    r"View run|View experiment|Downloading artifacts|\d+%\|.*\||\| INFO |\| WARNING |Warning:|warnings\.warn"
    r"|log4j|WARN |NativeCodeLoader|Setting default log level|Traceback|tmp_path_factory|great_expectations",
)


def test_demo_closes_the_loop(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "state")
    proc = subprocess.run(
        # the default round size: a smaller holdout holds about a dozen frauds, too few for a decision
        # at 95% confidence (the retrains then reject "within noise", rightly)
        [RTML, "demo", "--events", "24000", "--rate", "6000", "--keep-running", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = proc.stdout.splitlines()
    out = json.loads(lines[0]) if len(lines) == 1 else None
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert out is not None, f"--json must print exactly one line, got {len(lines)}: {proc.stdout[:2000]}"
        assert not LIBRARY_NOISE.search(proc.stderr), proc.stderr[-3000:]
        summary = out["summary"]
        assert out["ok"] and summary["valid_events_lost"] == 0
        assert summary["events_scored"] == summary["valid_events"] > 46_000
        assert summary["events_quarantined"] == summary["events_produced"] - summary["valid_events"] > 0
        assert summary["retrains"] == 2 and summary["promotions"] >= 1
        for p in out["promotions"]:  # the challenger beat the champion on each metric, same holdout
            deltas = [p["deltas"][m] for m in ("precision", "recall", "f1")]
            assert min(deltas) > 0, p  # better on each metric
        after_drift = [a for a in out["drift_alerts"] if a["check"] == 1]
        assert after_drift and summary["drift_alerts"] >= 1
        assert summary["alerts_delivered_to_oncall"] >= 1
        assert summary["quality_checks_passed"] == 2 and summary["scoring_job_restarts"] == 0
        assert out["stopped"] == []  # --keep-running

        prefect = out["urls"]["prefect"] + "/api"
        found = requests.post(f"{prefect}/deployments/filter", json={}, timeout=10).json()
        schedules = {d["name"]: d for d in found}
        assert len(found) == 7 and set(schedules) == {"rtml-fraud"}
        crons = sorted(sc["schedule"]["cron"] for d in found for sc in d["schedules"])
        # drift, labels, retrain, quality, maintain
        assert crons == ["*/10 * * * *", "*/15 * * * *", "*/5 * * * *", "*/5 * * * *", "17 3 * * *"]

        from mlflow import MlflowClient

        # the demo's own registry: an earlier test in this process may have set MLflow's global one
        c = MlflowClient(tracking_uri=out["urls"]["mlflow"], registry_uri=out["urls"]["mlflow"])
        versions = c.search_model_versions("name='rtml-fraud'")
        assert len(versions) == summary["versions_trained"] == 3
        assert c.get_model_version_by_alias("rtml-fraud", "champion").version == summary["champion"]
        assert summary["champion"] in {p["challenger"] for p in out["promotions"]}
    finally:
        rtml("down", "--json", env=env)


def test_a_failing_demo_stops_what_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rtml.infra.app import demo, stack
    from rtml.infra.config.settings import load_settings

    env = stack_env(tmp_path / "state")
    settings = load_settings(
        use_default_file=False,
        overrides={
            "state_dir": tmp_path / "state",
            "ports": {k: int(env[f"RTML_PORTS__{k.upper()}"]) for k in ("kafka", "mlflow", "prefect")},
        },
    )

    def broken(*args: object) -> dict:
        raise RuntimeError("demo failed half-way")

    monkeypatch.setattr(demo, "_demo_body", broken)
    with pytest.raises(RuntimeError, match="half-way"):
        demo.run_demo(settings, progress=False)
    pids = [rec["pid"] for name in ("kafka", "mlflow", "prefect") if (rec := stack.recorded(settings, name))]
    assert pids == []  # no service of the demo's left recorded ...
    assert not any((tmp_path / "state" / "run").glob("*.json"))
    for name in ("kafka", "mlflow", "prefect"):  # ... or listening
        port = int(env[f"RTML_PORTS__{name.upper()}"])
        assert stack._port_free(settings.host, port), name


def test_demo_on_a_terminal_prints_only_its_own_lines(tmp_path: Path) -> None:
    """Without --json: stdout holds rtml's tables and closing lines; stderr its progress; the libraries'
    chatter is in the log file, not on the terminal."""
    env = stack_env(tmp_path / "state", COLUMNS="160")
    proc = subprocess.run(
        [RTML, "demo", "--events", "2000", "--rate", "4000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    own = re.compile(
        r"^\s*$|[│┃┏┓┗┛┡┩└┘━─╇╈┼┳┻]"  # rich tables
        r"|^\s*(demo summary|quarantined by reason|promotion v|drift alerts|deployments)"  # their titles
        r"|^(MLflow UI|Prefect UI):|^stopped what the demo started|^Stop the stack with"
    )
    foreign = [ln for ln in proc.stdout.splitlines() if not own.search(ln)]
    assert foreign == [], f"stdout lines rtml did not write: {foreign[:10]}"
    assert "demo summary" in proc.stdout and "MLflow UI:" in proc.stdout
    assert not LIBRARY_NOISE.search(proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[-3000:]
    log = (tmp_path / "state" / "logs" / "cli.log").read_text()
    assert "mlflow" in log or "prefect" in log  # the libraries' logs were kept, in the file
