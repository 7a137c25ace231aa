"""Orchestration on the real Prefect server: deployments with schedules, the supervised scoring job."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from rtml.flows.bootstrap import bootstrap
from rtml.flows.score import score_flow
from rtml.infra.config.clients import prefect_api
from rtml.infra.config.spec import load_spec
from rtml.pipelines.producer import generated_frames, stream_frames
from rtml.pipelines.supervisor import STOP_FILE, SUPERVISED_PID
from tests.helpers import (
    overrides_of,
    rtml,
    scoped_settings,
    settings_env,
    sink_frame,
    valid_and_malformed,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_deploy_registers_every_deployment_with_its_schedule(stack, tmp_path: Path) -> None:
    s = scoped_settings(stack, tmp_path, drift={"schedule_cron": "*/7 * * * *"})
    env = settings_env(s) | {"RTML_DRIFT__SCHEDULE_CRON": "*/7 * * * *"}
    code, first, err = rtml("deploy", "--json", env=env)
    assert code == 0, err
    code, again, err = rtml("deploy", "--json", env=env)
    assert code == 0, err
    model = s.mlflow.model_name
    names = {
        f"rtml-{f}/{model}" for f in ("score", "labels", "retrain", "quality", "drift", "maintain", "promote")
    }
    assert {d["deployment"] for d in first["deployments"]} == names
    assert first["alerting"]["action"] == "skipped"  # no block named rtml-oncall, no webhook: said, not fatal

    found = requests.post(
        f"{s.prefect_api_url}/deployments/filter",
        json={"deployments": {"tags": {"all_": [model]}}},
        timeout=10,
    ).json()
    assert len(found) == 7  # idempotent: the second deploy updated, not duplicated
    flows = {
        f["id"]: f["name"]
        for f in requests.post(f"{s.prefect_api_url}/flows/filter", json={}, timeout=10).json()
    }
    crons = {flows[d["flow_id"]]: [sc["schedule"].get("cron") for sc in d["schedules"]] for d in found}
    assert crons == {
        "rtml-score": [],
        "rtml-labels": ["*/5 * * * *"],
        "rtml-retrain": ["*/15 * * * *"],
        "rtml-quality": ["*/10 * * * *"],
        "rtml-drift": ["*/7 * * * *"],
        "rtml-maintain": ["17 3 * * *"],
        "rtml-promote": [],
    }
    assert all(
        d["parameters"]["overrides"] is None or "sasl_password" not in json.dumps(d["parameters"])
        for d in found
    )


def test_supervisor_restarts_a_killed_job_from_its_checkpoint(stack, tmp_path: Path) -> None:
    s = scoped_settings(stack, tmp_path, spark={"max_events_per_trigger": 1500})
    spec = load_spec()
    bootstrap(s, spec, n=8000)
    stream_frames(s, spec, generated_frames(spec, 3000, 51, None, 1000), malformed_rate=0.02, seed=51)
    result: dict = {}

    def supervise() -> None:
        with prefect_api(s):
            result.update(score_flow(overrides=overrides_of(s), heartbeat_s=2.0, run_seconds=600))

    sup = threading.Thread(target=supervise)
    sup.start()
    pid_file = s.state_dir / "run" / SUPERVISED_PID
    batches = s.sink_root / "_batches"
    log = lambda: (s.state_dir / "logs" / "scoring.log").read_text()[-3000:]  # noqa: E731
    try:
        wait_for(lambda: pid_file.exists() and len(list(batches.glob("*.json"))) >= 1, 180, log)
        first_pid = json.loads(pid_file.read_text())["pid"]
        feeder = threading.Thread(
            target=stream_frames,
            args=(s, spec, generated_frames(spec, 3000, 52, None, 500)),
            kwargs={"malformed_rate": 0.02, "seed": 52, "rate": 600},
        )
        feeder.start()
        time.sleep(1.5)
        os.killpg(first_pid, signal.SIGKILL)  # the job and its JVM, mid-stream
        wait_for(lambda: json.loads(pid_file.read_text())["pid"] != first_pid, 60, log)
        feeder.join()
        valid, bad = valid_and_malformed(s)
        assert len(valid) + len(bad) == 6000
        wait_for(lambda: len(sink_frame(s, "scores")) >= len(valid), 240, log)
        time.sleep(3)  # a heartbeat after catching up
    finally:
        (s.state_dir / "run" / STOP_FILE).touch()
        sup.join(timeout=180)
    assert result["restarts"] >= 1 and -signal.SIGKILL in result["exits"]
    assert result["stopped_by"] == "stop" and not pid_file.exists()
    scores = sink_frame(s, "scores")
    assert scores[spec.event_id].is_unique, "duplicated events after the restart"
    assert set(scores[spec.event_id]) == set(valid), "events lost after the restart"
    assert len(sink_frame(s, "quarantine")) == len(bad)
    assert result["lag"] == 0 and result["last_progress"]["processed_rows_per_s"] is not None

    def events(name: str) -> list[dict]:
        return requests.post(
            f"{s.prefect_api_url}/events/filter",
            json={
                "filter": {
                    "event": {"name": [name]},
                    "resource": {"id": [f"rtml.scoring.{s.mlflow.model_name}"]},
                },
                "limit": 50,
            },
            timeout=10,
        ).json()["events"]

    restarted = events("rtml.scoring.restarted")
    assert len(restarted) == result["restarts"] and restarted[0]["payload"]["exit_code"] == -signal.SIGKILL
    beats = events("rtml.scoring.heartbeat")
    assert len(beats) >= 3
    keys = {"consumer_lag", "input_rows_per_s", "processed_rows_per_s", "batch_duration_ms", "restarts"}
    assert all(keys <= set(b["payload"]) for b in beats)
