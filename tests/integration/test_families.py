"""Every classifier-shaped model family through the platform: bootstrap, Spark scoring, a retrain
with its promotion decision, on the real broker, Spark, MLflow and Prefect."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtml.flows.bootstrap import bootstrap
from rtml.flows.retrain import retrain_flow
from rtml.infra.config.clients import prefect_api
from rtml.infra.config.spec import load_spec
from rtml.models.lifecycle.registry import client
from rtml.pipelines.producer import generated_frames, stream_frames
from rtml.pipelines.score_job import run_scoring
from tests.helpers import afternoon_ms, overrides_of, scoped_settings, sink_frame, valid_and_malformed

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("family", "params"),
    [("hoeffding_tree", {"grace_period": 100}), ("streaming_kmeans", {"k": 6, "half_life": 20.0})],
)
def test_family_scores_and_retrains_through_the_platform(
    stack, tmp_path: Path, family: str, params: dict
) -> None:
    s = scoped_settings(
        stack,
        tmp_path,
        model={"family": family, "params": params},
        retrain={"min_new_rows": 500},
        promotion={"min_holdout": 300, "min_positives": 3},
    )
    spec = load_spec()
    at = afternoon_ms()  # one time of day for history and stream (the generator's concept has hours)
    boot = bootstrap(s, spec, n=10_000, now_ms=at)
    assert boot["champion"] == "1"
    c = client(s)
    v1_run = c.get_run(c.get_model_version(s.mlflow.model_name, "1").run_id)
    assert v1_run.data.params["family"] == family

    stream = generated_frames(spec, 4000, 61, 1500, 1000, start_ms=at - 2_000_000)
    stream_frames(s, spec, stream, malformed_rate=0.03, seed=61)
    summary = run_scoring(s, spec, available_now=True)
    valid, bad = valid_and_malformed(s)
    assert summary["scored"] == len(valid) and summary["quarantined"] == len(bad)
    scores = sink_frame(s, "scores")
    assert set(scores[spec.event_id]) == set(valid) and scores[spec.event_id].is_unique
    assert scores["score"].between(0, 1).all() and set(scores["model_version"]) == {"1"}
    assert scores["score"].nunique() > 1  # a real model, not a constant

    with prefect_api(s):
        out = retrain_flow(overrides=overrides_of(s), trigger="manual")
    assert out["outcome"] in ("promote", "reject", "no_decision"), out
    assert out["challenger"] == "2" and [d["metric"] for d in out["decision"]] == [
        "precision",
        "recall",
        "f1",
    ]
    v2 = c.get_model_version(s.mlflow.model_name, "2")
    assert c.get_run(v2.run_id).data.params["family"] == family
    assert v2.tags["rtml.parent_version"] == "1"
    champion = c.get_model_version_by_alias(s.mlflow.model_name, "champion").version
    assert champion == ("2" if out["outcome"] == "promote" else "1")
