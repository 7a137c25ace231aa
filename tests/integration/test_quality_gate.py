"""Retrain gate on real Great Expectations, Prefect and MLflow: clean passes, every poison is blocked."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from rtml.expectations.training import quarantine_root, quarantined_ids
from rtml.flows.bootstrap import bootstrap
from rtml.flows.retrain import retrain_flow
from rtml.infra.config.clients import prefect_api
from rtml.infra.config.spec import load_spec
from rtml.models.lifecycle.registry import CHAMPION, alias_version, client
from tests.helpers import (
    POISONS,
    RTML,
    labelled_batch,
    overrides_of,
    poison,
    read_topic,
    scoped_settings,
    settings_env,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(stack, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("quality")
    s = scoped_settings(stack, tmp, retrain={"min_new_rows": 500})
    bootstrap(s, load_spec(), n=10_000)
    return {"settings": s, "clean": labelled_batch(4_000, seed=21), "tmp": tmp}


def _run(s, path: Path):  # noqa: ANN001, ANN202
    with prefect_api(s):
        return retrain_flow(
            overrides=overrides_of(s), trigger="manual", batch_file=str(path), return_state=True
        )


def test_clean_batch_passes_the_gate_and_is_trained_on(world: dict) -> None:
    s = world["settings"]
    path = world["tmp"] / "clean.parquet"
    world["clean"].to_parquet(path, index=False)
    state = _run(s, path)
    assert state.is_completed(), state.message
    out = state.result()
    assert out["quality_gate"]["passed"] and out["quality_gate"]["failed"] == []
    # every row of the batch is in the window: learned, used for the threshold (and learned next
    # round: the training watermark stops before the validation split) or judged on
    w = out["window"]
    assert w["validation_rows"] > 0 and w["train_rows"] + w["validation_rows"] + w["holdout_rows"] == 4_000
    assert out["challenger"] is not None and path.exists()  # a passing file stays where it is
    run = client(s).get_run(out["quality_gate"]["mlflow_run_id"])
    assert run.data.tags["rtml.quality.passed"] == "True"
    names = {a.path for a in client(s).list_artifacts(run.info.run_id, "quality/training_batch")}
    assert {"quality/training_batch/validation_result.json", "quality/training_batch/data_docs.html"} <= names


@pytest.mark.parametrize("kind", sorted(POISONS))
def test_poisoned_batch_fails_the_flow_is_quarantined_and_alerted(world: dict, kind: str) -> None:
    s = world["settings"]
    champion_before = alias_version(s, CHAMPION)
    versions_before = len(client(s).search_model_versions(f"name='{s.mlflow.model_name}'"))
    bad = poison(world["clean"], kind, seed=5)
    path = world["tmp"] / f"{kind}.parquet"
    bad.to_parquet(path, index=False)

    state = _run(s, path)

    assert state.is_failed()
    assert POISONS[kind] in state.message and "quarantined" in state.message
    assert alias_version(s, CHAMPION) == champion_before
    assert len(client(s).search_model_versions(f"name='{s.mlflow.model_name}'")) == versions_before
    assert not path.exists()  # moved, not deleted:
    [where] = [p.parent for p in quarantine_root(s).glob(f"*/{kind}.parquet")]
    assert len(pd.read_parquet(where / f"{kind}.parquet")) == len(bad) == 4_000
    assert len(pd.read_parquet(where / "batch.parquet")) == 4_000
    summary = json.loads((where / "summary.json").read_text())
    assert summary["quarantine"]["rows"] == 4_000 and not summary["passed"]
    assert any(f.startswith(POISONS[kind]) for f in summary["failed"])
    assert set(bad["transaction_id"].astype(str)) <= quarantined_ids(s, "transaction_id")
    alerts = [json.loads(r.value) for r in read_topic(s, s.kafka.topics.alerts)]
    mine = [a for a in alerts if a["payload"]["quarantine"]["path"] == str(where)]
    assert len(mine) == 1 and mine[0]["event"] == "rtml.quality.failed"
    assert POISONS[kind] in mine[0]["payload"]["failed"]


def test_failed_runs_and_alert_events_are_recorded_in_prefect(world: dict) -> None:
    import time

    import requests

    s = world["settings"]
    deadline = time.monotonic() + 30
    while True:
        r = requests.post(
            f"{s.prefect_api_url}/events/filter",
            json={
                "filter": {
                    "event": {"name": ["rtml.quality.failed"]},
                    "resource": {"labels": {"rtml.model.name": [s.mlflow.model_name]}},
                },
                "limit": 50,
            },
            timeout=10,
        )
        r.raise_for_status()
        events = r.json()["events"]
        if len(events) >= len(POISONS) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(events) == len(POISONS)
    assert {e["payload"]["severity"] for e in events} == {"critical"}
    runs = requests.post(
        f"{s.prefect_api_url}/flow_runs/filter",
        json={"flow_runs": {"state": {"type": {"any_": ["FAILED"]}}}, "limit": 200},
        timeout=10,
    ).json()
    messages = [r["state"]["message"] or "" for r in runs]
    for name in POISONS.values():
        assert any(name in m for m in messages), name


def test_cli_retrain_on_a_poisoned_batch_and_validate_exit_1_naming_the_expectation(world: dict) -> None:
    s = world["settings"]
    path = world["tmp"] / "cli-dupes.parquet"
    poison(world["clean"], "duplicate_ids", seed=9).to_parquet(path, index=False)
    check = subprocess.run(
        [RTML, "validate", str(path), "--json"],
        env=settings_env(s),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 1, check.stderr
    report = json.loads(check.stdout)
    assert report["suite"] == "training_batch" and not report["passed"]
    assert any(f.startswith(POISONS["duplicate_ids"]) for f in report["failed"])
    run = subprocess.run(
        [RTML, "retrain", "--batch", str(path)],
        env=settings_env(s),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("rtml: retrain flow failed: training batch failed")
        and POISONS["duplicate_ids"] in last
    )
    assert not path.exists()
    usage = subprocess.run(
        [RTML, "validate"], env=settings_env(s), capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2 and "FILE or --window" in usage.stderr
