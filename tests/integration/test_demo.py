"""`rtml demo` at reduced size on its own stack: the loop closes, and the UIs' backends show it."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.helpers import rtml, stack_env

pytestmark = pytest.mark.integration


def test_demo_closes_the_loop(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "state")
    code, out, err = rtml(
        "demo", "--events", "6000", "--rate", "3000", "--keep-running", "--json", env=env, timeout=900
    )
    try:
        assert code == 0 and out is not None, err[-3000:]
        summary = out["summary"]
        assert out["ok"] and summary["valid_events_lost"] == 0
        assert summary["events_scored"] == summary["valid_events"] > 11_000
        assert summary["events_quarantined"] == summary["events_produced"] - summary["valid_events"] > 0
        assert summary["retrains"] == 2 and summary["promotions"] >= 1
        for p in out["promotions"]:  # the challenger beat the champion on the same holdout
            deltas = [p["deltas"][m] for m in ("precision", "recall", "f1")]
            assert min(deltas) >= 0 and max(deltas) > 0, p
        after_drift = [a for a in out["drift_alerts"] if a["check"] == 1]
        assert after_drift and summary["drift_alerts"] >= 1
        assert summary["alerts_delivered_to_oncall"] >= 1
        assert summary["quality_checks_passed"] == 2 and summary["scoring_job_restarts"] == 0
        assert out["stopped"] == []  # --keep-running

        prefect = out["urls"]["prefect"] + "/api"
        found = requests.post(f"{prefect}/deployments/filter", json={}, timeout=10).json()
        schedules = {d["name"]: d for d in found}
        assert len(found) == 5 and set(schedules) == {"rtml-fraud"}
        crons = sorted(sc["schedule"]["cron"] for d in found for sc in d["schedules"])
        assert crons == ["*/10 * * * *", "*/15 * * * *", "*/5 * * * *"]

        from mlflow import MlflowClient

        c = MlflowClient(tracking_uri=out["urls"]["mlflow"])
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
