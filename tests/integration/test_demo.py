"""`rtml demo` on its own stack, as a person runs it: the loop closes, the terminal shows only rtml's
lines, and the UIs' backends agree with its tables."""

from __future__ import annotations

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


def _tables(stdout: str) -> dict[str, list[list[str]]]:
    """The rich tables of a terminal run: title (joined if wrapped) -> body rows as cell strings."""
    tables: dict[str, list[list[str]]] = {}
    title: list[str] = []
    rows: list[list[str]] | None = None
    for line in stdout.splitlines():
        text = line.strip()
        if text.startswith("┏"):
            rows = tables.setdefault(" ".join(title), [])
            title = []
        elif text.startswith("│") and rows is not None:
            rows.append([cell.strip() for cell in text.strip("│").split("│")])
        elif text.startswith("└"):
            rows = None
        elif text and text[0] not in "┃┡┗━─╇╈┼┳┻" and rows is None:
            title.append(text)
        if not text:
            title = []
    return tables


def test_demo_on_a_terminal_closes_the_loop_and_prints_only_its_own_lines(tmp_path: Path) -> None:
    """One demo run, as a person runs it: stdout holds rtml's tables and closing lines, stderr its
    progress, the libraries' chatter is in the log file; the tables say the loop closed, and the
    still-running MLflow and Prefect servers agree with them."""
    env = stack_env(tmp_path / "state", COLUMNS="160")
    proc = subprocess.run(
        # the default round size: a smaller holdout holds about a dozen frauds, too few for a decision
        # at 95% confidence (the retrains then reject "within noise", rightly)
        [RTML, "demo", "--events", "24000", "--rate", "6000", "--keep-running"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        own = re.compile(
            r"^\s*$|^\s*[│┃┏┓┗┛┡┩└┘]"  # rich tables' lines (borders, header, rows)
            r"|^\s*(demo summary|quarantined by reason|promotion v|drift alerts|deployments)"  # titles
            r"|(\(deltas\)|feature and kind\))\s*$"  # the end of a wrapped title
            r"|^(MLflow UI|Prefect UI):|^Stop the stack with"
        )
        foreign = [ln for ln in proc.stdout.splitlines() if not own.search(ln)]
        assert foreign == [], f"stdout lines rtml did not write: {foreign[:10]}"
        assert not LIBRARY_NOISE.search(proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[-3000:]
        log = (tmp_path / "state" / "logs" / "cli.log").read_text()
        assert "mlflow" in log or "prefect" in log  # the libraries' logs were kept, in the file

        tables = _tables(proc.stdout)
        summary = {k: v for k, v in tables["demo summary"]}
        count = lambda key: int(summary[key])  # noqa: E731
        assert count("valid_events_lost") == 0
        assert count("events_scored") == count("valid_events") > 46_000
        assert count("events_quarantined") == count("events_produced") - count("valid_events") > 0
        assert count("retrains") == 2 and count("promotions") >= 1
        promotions = {t: dict(rows) for t, rows in tables.items() if t.startswith("promotion v")}
        assert len(promotions) == count("promotions"), list(tables)
        for title, deltas in promotions.items():  # the challenger beat the champion on each metric
            assert min(float(deltas[m]) for m in ("precision", "recall", "f1")) > 0, (title, deltas)
        alerts = tables["drift alerts (one per model version, feature and kind)"]
        assert count("drift_alerts") == len(alerts) >= 1
        assert any(row[0] == "1" for row in alerts)  # the check after the drift
        assert count("alerts_delivered_to_oncall") >= 1
        assert count("quality_checks_passed") == 2 and count("scoring_job_restarts") == 0
        assert len(tables["deployments"]) == 7
        assert "stopped what the demo started" not in proc.stdout  # --keep-running
        urls = dict(re.findall(r"^(MLflow|Prefect) UI:\s+(\S+)", proc.stdout, re.M))

        found = requests.post(f"{urls['Prefect']}/api/deployments/filter", json={}, timeout=10).json()
        schedules = {d["name"]: d for d in found}
        assert len(found) == 7 and set(schedules) == {"rtml-fraud"}
        crons = sorted(sc["schedule"]["cron"] for d in found for sc in d["schedules"])
        # drift, labels, retrain, quality, maintain
        assert crons == ["*/10 * * * *", "*/15 * * * *", "*/5 * * * *", "*/5 * * * *", "17 3 * * *"]

        from mlflow import MlflowClient

        # the demo's own registry: an earlier test in this process may have set MLflow's global one
        c = MlflowClient(tracking_uri=urls["MLflow"], registry_uri=urls["MLflow"])
        versions = c.search_model_versions("name='rtml-fraud'")
        assert len(versions) == count("versions_trained") == 3
        champion = c.get_model_version_by_alias("rtml-fraud", "champion").version
        assert champion == summary["champion"]
        assert any(t.endswith(f"-> v{champion} (deltas)") for t in promotions)
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
