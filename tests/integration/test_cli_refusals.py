"""Smaller on-call drills: bad input is refused in one line before anything happens, repeated runs
do not repeat ids, and a regression model's bootstrap reports regression metrics."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import RTML, read_topic, rtml, scoped_settings, settings_env, stack_env

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pricing"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("timeout", ["-5", "0", "nan"])
def test_up_refuses_a_non_positive_timeout_before_starting_anything(tmp_path: Path, timeout: str) -> None:
    env = stack_env(tmp_path / "state")
    code, out, err = rtml("up", "--timeout", timeout, "--json", env=env, timeout=60)
    assert code == 2 and "--timeout" in out["error"] and "positive" in out["error"]
    assert len(err.strip().splitlines()) == 1
    run = tmp_path / "state" / "run"
    assert not run.exists() or not list(run.glob("*.json"))
    assert not any(_listening(int(env[f"RTML_PORTS__{k}"])) for k in ("KAFKA", "MLFLOW", "PREFECT"))


def test_retrain_refuses_an_unknown_trigger(tmp_path: Path) -> None:
    code, out, err = rtml(
        "retrain", "--trigger", "bogus", "--json", env=stack_env(tmp_path / "s"), timeout=60
    )
    assert code == 2 and out["error"] == (
        "Invalid value for --trigger: unknown retrain trigger 'bogus' (choose from schedule, drift, manual)"
    )
    assert len(err.strip().splitlines()) == 1


def test_retrain_flow_refuses_an_unknown_trigger_and_records_nothing(stack, tmp_path: Path) -> None:
    from rtml.flows.retrain import retrain_flow
    from rtml.infra.config.clients import configure_mlflow, prefect_api
    from rtml.models.lifecycle.registry import client
    from tests.helpers import overrides_of

    s = scoped_settings(stack, tmp_path)
    configure_mlflow(s)
    with prefect_api(s):
        state = retrain_flow(overrides=overrides_of(s), trigger="bogus", return_state=True)
    assert state.is_failed() and "trigger" in str(state.message)
    assert client(s).search_model_versions(f"name='{s.mlflow.model_name}'") == []
    with pytest.raises(ValueError, match="unknown retrain trigger 'bogus'"):
        retrain_flow.fn(overrides=overrides_of(s), trigger="bogus")  # no Prefect validation on .fn


def test_validate_names_missing_and_unexpected_columns_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"a": [1, 2], "b": [3, 4], "amount": [1.0, 2.0]}).to_csv(bad, index=False)
    code, out, err = rtml("validate", str(bad), "--json", env=stack_env(tmp_path / "s"), timeout=120)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out["error"] == (
        f"{bad}: missing column(s) needed by suite 'raw_events': transaction_id, card_id, event_time, "
        "distance_from_home_km, merchant_category, channel, card_present; unexpected: a, b "
        "(spec 'card_transactions')"
    )


def test_two_produce_runs_with_the_default_seed_repeat_no_id(stack, tmp_path: Path) -> None:
    s = scoped_settings(stack, tmp_path)
    env = settings_env(s)
    for _ in range(2):
        code, out, err = rtml("produce", "-n", "300", "--json", env=env)
        assert code == 0 and out["events"] == 300, err
    import json

    events = [json.loads(r.value) for r in read_topic(s, s.kafka.topics.events)]
    ids = [e["transaction_id"] for e in events]
    assert len(ids) == 600 and len(set(ids)) == 600
    runs = {i.rsplit("-", 1)[0] for i in ids}
    assert len(runs) == 2 and all(r.startswith("tx-1-") for r in runs)  # seed 1, one nonce per run
    first, second = ([e for e in events if e["transaction_id"].startswith(r)] for r in sorted(runs))
    key = lambda e: e["transaction_id"].rsplit("-", 1)[1]  # noqa: E731
    same = lambda e: (e["card_id"], e["amount"], e["merchant_category"])  # noqa: E731
    assert [same(e) for e in sorted(first, key=key)] == [same(e) for e in sorted(second, key=key)]


def test_bootstrap_of_the_pricing_example_prints_regression_metrics(stack, tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = subprocess.run(
        [sys.executable, str(EXAMPLE / "make_data.py"), "--out", str(data), "--n", "3000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    env = settings_env(scoped_settings(stack, tmp_path))
    proc = subprocess.run(
        [RTML, "--config", str(EXAMPLE / "rtml.yaml"), "--spec", str(EXAMPLE / "spec.yaml"), "bootstrap"]
        + ["--from", str(data / "history.parquet")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "KeyError" not in proc.stderr
    line = " ".join(proc.stdout.split())
    assert "registered version 1 as @champion; holdout RMSE" in line and "MAE" in line and "R²" in line
