"""`rtml up / status / down` as a user runs them: real processes on free ports."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.helpers import RTML, group_members, rtml, stack_env

pytestmark = pytest.mark.integration


def test_up_status_up_again_down(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "state")
    t0 = time.monotonic()
    code, out, err = rtml("up", "--json", env=env, timeout=120)
    took = time.monotonic() - t0
    try:
        assert code == 0, err
        assert out is not None and out["ok"] is True
        services = out["services"]
        assert set(services) == {"kafka", "mlflow", "prefect"}
        assert all(s["healthy"] and s["action"] == "started" for s in services.values()), services
        assert took <= 60, f"stack took {took:.1f}s"
        assert all(s["url"].split("//")[-1].startswith("127.0.0.1:") for s in services.values())
        assert set(out["topics_created"]) == {
            "rtml.events",
            "rtml.labels",
            "rtml.scores",
            "rtml.quarantine",
            "rtml.alerts",
        }
        pids = {n: s["pid"] for n, s in services.items()}

        code, status, _ = rtml("status", "--json", env=env)
        assert code == 0 and all(s["healthy"] and s["managed"] for s in status["services"].values())

        code, again, _ = rtml("up", "--json", env=env)
        assert code == 0
        assert {n: s["action"] for n, s in again["services"].items()} == dict.fromkeys(pids, "reused")
        assert {n: s["pid"] for n, s in again["services"].items()} == pids
        assert again["topics_created"] == []
        groups = {pid: group_members(pid) for pid in pids.values()}
        assert all(groups.values())
        # MLflow's server runs without its GenAI job runner and huey consumers (≈2 GB it never uses)
        commands = [Path(f"/proc/{p}/cmdline").read_bytes() for p in groups[pids["mlflow"]]]
        assert not [c for c in commands if b"_job_runner" in c or b"huey" in c], commands
    finally:
        code, down, _ = rtml("down", "--json", env=env)
    assert code == 0 and set(down["stopped"]) == {"kafka", "mlflow", "prefect"}
    time.sleep(0.5)
    assert all(group_members(pid) == [] for pid in pids.values()), "processes left behind"
    assert not list((tmp_path / "state" / "run").glob("*.json"))
    # state (logs, MLflow db) is kept: down removes nothing else
    assert (tmp_path / "state" / "mlflow" / "mlflow.db").exists()
    code, status, _ = rtml("status", "--json", env=env)
    assert code == 1 and not any(s["healthy"] for s in status["services"].values())


def test_port_in_use_fails_cleanly(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "state")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(env["RTML_PORTS__PREFECT"])))
        blocker.listen()
        code, out, err = rtml("up", "--json", env=env)
    assert code == 1
    assert out == {"ok": False, "error": out["error"]}
    assert "prefect: port" in out["error"] and "in use" in out["error"]
    assert len(err.strip().splitlines()) == 1
    run = tmp_path / "state" / "run"
    assert not run.exists() or not list(run.glob("*.json")), "half-started services recorded"


@pytest.mark.parametrize(
    ("args", "extra_env", "needle", "want_code"),
    [
        (("--tracking-uri", "http://127.0.0.1:9"), {}, "mlflow: external service", 1),
        ((), {"RTML_PORTS__KAFKA": "not-a-port"}, "ports.kafka", 2),
        ((), {"RTML_KAFKA__BOOTSTRAPSERVERS": "x:1"}, "unknown setting", 2),
    ],
)
def test_bad_configuration_starts_nothing(
    tmp_path: Path, args: tuple, extra_env: dict, needle: str, want_code: int
) -> None:
    env = stack_env(tmp_path / "state", **extra_env)
    code, out, err = rtml(*args, "up", "--json", env=env)
    assert code == want_code
    assert needle in out["error"]
    assert len(err.strip().splitlines()) == 1
    run = tmp_path / "state" / "run"
    assert not run.exists() or not list(run.glob("*.json"))


def test_unknown_key_in_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "rtml.yaml"
    cfg.write_text(json.dumps({"kafka": {"topics": {"event": "x"}}}))
    code, out, err = rtml("--config", str(cfg), "up", "--json", env=stack_env(tmp_path / "s"))
    assert code == 2
    assert out["error"].startswith("config error: kafka.topics.event: unknown setting")


def test_usage_error_is_one_line(tmp_path: Path) -> None:
    code, out, err = rtml("up", "--no-such-flag", "--json", env=stack_env(tmp_path / "s"))
    assert code == 2 and "No such option" in out["error"]
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["deploy"], ["alerting"]])
def test_unreachable_prefect_is_one_line_not_a_traceback(tmp_path: Path, command: list[str]) -> None:
    code, out, err = rtml(*command, "--json", env=stack_env(tmp_path / "s"), timeout=120)  # nothing is up
    assert code == 1 and out == {"ok": False, "error": out["error"]}
    assert out["error"].startswith("a service is unreachable") and "rtml up" in out["error"]
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_produce_and_replay_cli(stack, tmp_path: Path) -> None:
    import pandas as pd

    from tests.helpers import read_topic, scoped_settings, settings_env

    s = scoped_settings(stack, tmp_path)
    env = settings_env(s)
    code, out, err = rtml("produce", "-n", "500", "--malformed-rate", "0.1", "--json", env=env)
    assert code == 0, err
    assert (
        out["events"] == 500
        and out["valid"] + out["malformed_total"] == 500
        and out["labels"] == out["valid"]
    )
    good = tmp_path / "events.csv"
    pd.DataFrame(
        {
            "transaction_id": ["a1", "a2"],
            "event_time": ["2026-01-01T00:00:00Z"] * 2,
            "card_id": ["c", "d"],
            "amount": [1.0, 2.0],
            "distance_from_home_km": [0.1, 0.2],
            "merchant_category": ["fuel"] * 2,
            "channel": ["pos"] * 2,
            "card_present": [True, False],
            "is_fraud": [0, 1],
        }
    ).to_csv(good, index=False)
    code, out, err = rtml("replay", str(good), "--json", env=env)
    assert code == 0 and out["events"] == 2 and out["labels"] == 2
    assert len(read_topic(s, s.kafka.topics.events)) == 502
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"transaction_id": ["x"]}).to_csv(bad, index=False)
    code, out, err = rtml("replay", str(bad), "--json", env=env)
    assert code == 1 and "missing column(s)" in out["error"] and len(err.strip().splitlines()) == 1
    code, out, err = rtml("replay", str(tmp_path / "nope.parquet"), "--json", env=env)
    assert code == 1 and "no such file" in out["error"]


def test_json_mode_stdout_is_exactly_one_object(stack, tmp_path: Path) -> None:
    """MLflow prints run links and registry lines; in --json mode stdout holds only the result."""
    import subprocess

    from tests.helpers import scoped_settings, settings_env

    env = settings_env(scoped_settings(stack, tmp_path))
    proc = subprocess.run(
        [RTML, "bootstrap", "-n", "3000", "--json"], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["ok"] is True and out["champion"] == "1" and 0 <= out["metrics"]["holdout_f1"] <= 1
    # the libraries' output is on neither stream: it is in the log file, not lost
    assert "View run" not in proc.stderr and "registered model" not in proc.stderr, proc.stderr
    log = (Path(env["RTML_STATE_DIR"]) / "logs" / "cli.log").read_text()
    assert "Successfully registered model" in log and "Created version '1'" in log
