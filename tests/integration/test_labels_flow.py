"""The labels flow and a retrain started at the same moment, ten times: no error, and the labelled
table equals a from-scratch join of the scores and labels tables after every round. Each retrained
version records the labelled table version it trained and was judged on (lineage): time travel to
it re-reads exactly its window."""

from __future__ import annotations

import contextvars
import json
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from rtml.features.featurise import EVENT_MS, featurise_history
from rtml.flows.bootstrap import bootstrap
from rtml.flows.labels import labels_flow
from rtml.flows.retrain import retrain_flow
from rtml.infra.config.clients import prefect_api
from rtml.infra.config.spec import load_spec, parse_duration_seconds
from rtml.models.lifecycle.registry import client
from rtml.pipelines.history import history_frame
from rtml.pipelines.labelled import read_labelled
from rtml.pipelines.labels import INGEST_APP
from rtml.pipelines.tables import append, commit_batch, open_table
from tests.helpers import RTML, overrides_of, scoped_settings, settings_env

pytestmark = pytest.mark.integration

SPEC = load_spec()
ID, LABEL = SPEC.event_id, SPEC.label.field
ROUNDS, PER_ROUND = 10, 150


def _events() -> pd.DataFrame:
    """Scored events with the model's inputs (generated card transactions, featurised), oldest first."""
    frame = featurise_history(history_frame(SPEC, ROUNDS * PER_ROUND, 21, None), SPEC)
    frame = frame.drop(columns=["drifted"]).sort_values(EVENT_MS, kind="stable").reset_index(drop=True)
    return frame.assign(score=0.1, decision=0, model_version="1", scored_at_ms=frame[EVENT_MS] + 50)


def _from_scratch(s) -> pd.Series:  # noqa: ANN001
    """The oracle, in pandas: every scored event joined to its newest label; unlabelled events past
    the horizon (event time, from the newest scored event) count as negative; the rest are pending."""
    scores = open_table(s, "scores").to_pandas().drop_duplicates(ID, keep="first")
    labels = open_table(s, "labels").to_pandas().sort_values("labelled_at_ms", kind="stable")
    labels = labels.drop_duplicates(ID, keep="last")[[ID, LABEL]]
    joined = scores.merge(labels, on=ID, how="left")
    cut = scores[EVENT_MS].max() - parse_duration_seconds(SPEC.label.horizon) * 1000
    joined.loc[joined[LABEL].isna() & (joined[EVENT_MS] <= cut), LABEL] = 0
    return joined[joined[LABEL].notna()].set_index(ID)[LABEL].astype(int).sort_index()


def test_labels_flow_and_retrain_started_together_ten_times(stack, tmp_path: Path) -> None:
    s = scoped_settings(
        stack,
        tmp_path,
        retrain={"min_new_rows": 50},
        quality={"min_training_rows": 50},
        promotion={"min_holdout": 10, "min_positives": 1, "margin": 1.0},  # judged, never promoted
    )
    bootstrap(s, SPEC, n=5_000)
    events = _events()
    truth = events.pop(LABEL)
    rng = np.random.default_rng(3)
    errors: list[BaseException] = []
    labels_runs: list[dict] = []
    retrains: list[dict] = []

    def run(target, out: list, start: threading.Barrier) -> None:  # noqa: ANN001
        try:
            start.wait()
            out.append(target())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with prefect_api(s):
        for r in range(ROUNDS):
            batch = events.iloc[r * PER_ROUND : (r + 1) * PER_ROUND]
            commit_batch(s, "scores", pa.Table.from_pandas(batch, preserve_index=False), "q-scores", r)
            told = batch.index[(truth[batch.index] == 1) | (rng.random(len(batch)) < 0.6)]
            labels = pd.DataFrame(
                {
                    ID: events.loc[told, ID],
                    LABEL: truth[told],
                    "labelled_at_ms": events.loc[told, EVENT_MS] + 1,
                }
            )
            append(s, "labels", pa.Table.from_pandas(labels, preserve_index=False), {INGEST_APP: r + 1})
            start = threading.Barrier(2)
            jobs = [
                (lambda: labels_flow(overrides=overrides_of(s)), labels_runs),
                (lambda: retrain_flow(overrides=overrides_of(s), trigger="manual"), retrains),
            ]
            # each thread in a copy of this context: Prefect's temporary API setting is a context var
            threads = [
                threading.Thread(target=contextvars.copy_context().run, args=(run, fn, out, start))
                for fn, out in jobs
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=300)
            assert not errors, errors
            assert len(labels_runs) == len(retrains) == r + 1
            got = read_labelled(s).set_index(ID)[LABEL].astype(int).sort_index()
            expected = _from_scratch(s)
            assert len(got) == len(expected) >= len(told)
            assert got.equals(expected)
            assert read_labelled(s)[ID].is_unique
    # each scored event merged exactly once, by whichever of the two refreshed first
    merged = sum(x["new_scored"] for x in labels_runs) + sum(x["labelled"]["new_scored"] for x in retrains)
    assert merged == ROUNDS * PER_ROUND

    # lineage: each retrained version names the labelled table version of its window
    trained = [x for x in retrains if x.get("challenger")]
    assert len(trained) >= ROUNDS - 1, [x.get("reason") for x in retrains]
    p = subprocess.run(
        [RTML, "models", "--json"], env=settings_env(s), capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    listed = {v["version"]: v for v in json.loads(p.stdout)["versions"]}
    assert listed["1"]["lineage"] is None  # bootstrap: not trained from the table
    c = client(s)
    for x in trained:
        lineage = listed[x["challenger"]]["lineage"]
        version, since = lineage["labelled_table_version"], lineage["since_ms"]
        assert version == x["window"]["labelled_table_version"] and since == 0  # watermark 0: never promoted
        run = c.get_run(c.get_model_version(s.mlflow.model_name, x["challenger"]).run_id)
        assert run.data.params["window_labelled_table_version"] == str(version)
        assert run.data.tags["rtml.labelled_table_version"] == str(version)
        window = x["window"]
        rows = window["train_rows"] + window["validation_rows"] + window["holdout_rows"]
        assert len(read_labelled(s, since, version)) == rows == window["new_rows"]  # time travel
    first = trained[0]["window"]
    assert len(read_labelled(s, 0)) > first["new_rows"]  # the table grew since: the old version mattered
