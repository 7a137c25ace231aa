"""Label poisoning through the retrain flow on real Kafka, Spark, MLflow, Prefect and GE.

The drill: events are scored by the running job while their labels arrive poisoned on the labels
topic -- 5% of the negatives flipped to positive, a positive rate well inside its bounds. The
retrain flow builds the labelled window (scored events joined with the labels) and must stop at the
training gate, naming the label-consistency expectation; nothing is registered.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from rtml.expectations.label_consistency import EXPECTATION
from rtml.expectations.training import quarantine_root, quarantined_ids
from rtml.flows.bootstrap import bootstrap
from rtml.flows.retrain import retrain_flow
from rtml.infra.config.clients import prefect_api
from rtml.infra.config.spec import load_spec
from rtml.models.lifecycle.registry import CHAMPION, alias_version, client
from rtml.pipelines.producer import generated_frames, stream_frames
from rtml.pipelines.score_job import run_scoring
from tests.helpers import overrides_of, read_topic, scoped_settings, sink_frame, wait_for

pytestmark = pytest.mark.integration

EVENTS = 4_000


def _poisoned(frames: Iterator[pd.DataFrame], share: float, flipped: list[str]) -> Iterator[pd.DataFrame]:
    """Each frame with `share` of its negatives labelled positive; the flipped ids are recorded."""
    rng = np.random.default_rng(5)
    for frame in frames:
        y = frame["is_fraud"].to_numpy().copy()
        neg = np.flatnonzero(y == 0)
        idx = rng.choice(neg, int(round(share * len(neg))), replace=False)
        y[idx] = 1
        flipped.extend(frame["transaction_id"].iloc[idx])
        yield frame.assign(is_fraud=y)


@pytest.fixture(scope="module")
def world(stack, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("labelgate")
    # the drill: a poisoning whose positive rate stays inside the rate bounds, so that only the label
    # check can catch it (the default bounds, 10x the reference rate, would flag this rate too)
    s = scoped_settings(
        stack,
        tmp,
        retrain={"min_new_rows": 500},
        spark={"max_events_per_trigger": 10_000},
        quality={"positive_rate_max": 0.2},
    )
    spec = load_spec()
    bootstrap(s, spec, n=10_000)
    flipped: list[str] = []
    stop = threading.Event()
    runner = threading.Thread(target=run_scoring, args=(s, spec), kwargs={"stop": stop})
    runner.start()
    try:
        frames = _poisoned(generated_frames(spec, EVENTS, 61, None, 2_000), 0.05, flipped)
        counts = stream_frames(s, spec, frames, seed=61)
        wait_for(lambda: len(sink_frame(s, "scores")) >= EVENTS, 300)
    finally:
        stop.set()
        runner.join(timeout=120)
    return {"settings": s, "counts": counts, "flipped": flipped}


def test_poisoned_labelled_window_is_blocked_by_the_label_check_and_nothing_registered(world: dict) -> None:
    s, counts = world["settings"], world["counts"]
    assert counts["labels"] == EVENTS and 0.04 < counts["positives"] / EVENTS < 0.2  # rate in bounds
    champion_before = alias_version(s, CHAMPION)
    versions_before = len(client(s).search_model_versions(f"name='{s.mlflow.model_name}'"))

    with prefect_api(s):
        state = retrain_flow(overrides=overrides_of(s), trigger="manual", return_state=True)

    assert state.is_failed()
    assert EXPECTATION in state.message and "confident negatives labelled positive" in state.message
    assert "quarantined" in state.message and "champion unchanged" in state.message
    assert alias_version(s, CHAMPION) == champion_before
    assert len(client(s).search_model_versions(f"name='{s.mlflow.model_name}'")) == versions_before
    # the labelled window (scored events joined with the poisoned labels) is in quarantine, kept whole
    [where] = [p.parent for p in quarantine_root(s).glob("*/batch.parquet")]
    batch = pd.read_parquet(where / "batch.parquet")
    assert len(batch) == EVENTS and {"score", "model_version"} <= set(batch.columns)
    summary = json.loads((where / "summary.json").read_text())
    failed = [f for f in summary["failed"] if f.startswith(EXPECTATION)]
    assert failed and summary["failed"] == failed  # the only expectation this poisoning fails
    assert set(world["flipped"]) <= quarantined_ids(s, "transaction_id")
    # a critical alert names the check
    alerts = [json.loads(r.value) for r in read_topic(s, s.kafka.topics.alerts)]
    [alert] = [a for a in alerts if a["event"] == "rtml.quality.failed"]
    assert alert["payload"]["failed"] == [EXPECTATION]
    assert alert["payload"]["quarantine"]["path"] == str(where)
    # the GE result stored in MLflow holds the counts the decision was made on
    run = client(s).get_run(alert["payload"]["mlflow_run_id"])
    assert run.data.tags["rtml.quality.passed"] == "False"


def test_the_next_retrain_leaves_the_quarantined_window_out(world: dict) -> None:
    s = world["settings"]
    with prefect_api(s):
        out = retrain_flow(overrides=overrides_of(s), trigger="manual")
    assert out["outcome"] == "skipped" and out["window"]["new_rows"] == 0
    assert out["champion_after"] == alias_version(s, CHAMPION)
