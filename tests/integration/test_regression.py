"""The pricing example through the platform: streaming linear regression on a regression spec --
bootstrap from a file, replay with late labels, Spark scoring, a retrain judged on RMSE/MAE/R^2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rtml.flows.bootstrap import bootstrap
from rtml.flows.retrain import retrain_flow
from rtml.infra.config.clients import prefect_api
from rtml.infra.config.spec import load_spec
from rtml.models.lifecycle.registry import client
from rtml.pipelines.producer import file_frames, stream_frames
from rtml.pipelines.score_job import run_scoring
from tests.helpers import overrides_of, scoped_settings, sink_frame

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pricing"


def test_pricing_regression_scores_and_retrains_on_rmse_mae_r2(stack, tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "make_data.py"),
            "--out",
            str(data),
            "--n",
            "8000",
            "--drift-at",
            "400",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    s = scoped_settings(
        stack,
        tmp_path,
        spec=str(EXAMPLE / "spec.yaml"),
        model={"family": "streaming_linear"},
        promotion={"min_holdout": 300},
        retrain={"min_new_rows": 500},
    )
    spec = load_spec(s.spec)
    boot = bootstrap(s, spec, from_file=data / "history.parquet")
    assert boot["champion"] == "1" and boot["metrics"]["holdout_r2"] > 0.9
    assert {"holdout_rmse", "holdout_mae"} <= set(boot["metrics"])

    assert spec.event_time_format == "epoch_s"  # event time as a JSON number of seconds
    # each realised price follows its quote 300 quotes later (the last 300 at the end of the stream)
    produced = stream_frames(s, spec, file_frames(data / "stream.parquet", spec, 500), label_delay_events=300)
    assert produced["events"] == produced["labels"] == 2000
    summary = run_scoring(s, spec, available_now=True)
    assert summary["scored"] == 2000 and summary["quarantined"] == 0
    scores = sink_frame(s, "scores").merge(pd.read_parquet(data / "stream.parquet"), on="quote_id")
    assert len(scores) == 2000  # predicted prices track the realised ones (before any retrain)
    sent_s = pd.read_parquet(data / "stream.parquet").set_index("quote_id")["event_time"]
    assert (
        scores["_event_ms"].to_numpy() == (sent_s.loc[scores["quote_id"]].to_numpy() * 1000).round()
    ).all()
    assert np.corrcoef(scores["score"], scores["price_paid"])[0, 1] > 0.95

    with prefect_api(s):
        out = retrain_flow(overrides=overrides_of(s), trigger="manual")
    assert out["quality_gate"]["passed"], out["quality_gate"]
    assert [d["metric"] for d in out["decision"]] == ["rmse", "mae", "r2"]
    # after the drift the champion misprices; the challenger kept learning on the new regime
    assert out["outcome"] == "promote", out["reason"]
    deltas = {d["metric"]: d["delta"] for d in out["decision"]}
    assert deltas["rmse"] < 0 and deltas["mae"] < 0 and deltas["r2"] > 0
    c = client(s)
    assert c.get_model_version_by_alias(s.mlflow.model_name, "champion").version == out["challenger"] == "2"
    run = c.get_run(c.get_model_version(s.mlflow.model_name, "2").run_id)
    assert run.data.params["family"] == "streaming_linear" and "holdout_rmse" in run.data.metrics
