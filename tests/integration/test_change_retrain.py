"""The retrain flow right after a concept drift (real MLflow, Prefect and Great Expectations): the
only labelled rows of the new concept are the newest ones, which the holdout as selected takes, so
the holdout moves after the change and a fresh tree trained between the change and it is promoted."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from rtml.features.featurise import EVENT_MS
from rtml.flows.bootstrap import bootstrap
from rtml.flows.retrain import retrain_flow
from rtml.infra.config.clients import prefect_api
from rtml.models.lifecycle.registry import CHAMPION, alias_version, client
from tests.helpers import overrides_of, scoped_settings
from tests.model.test_change_window import AGR_BOOT, agrawal, sea_spec

pytestmark = pytest.mark.integration


def _raw(frame: pd.DataFrame, first: int) -> pd.DataFrame:
    """The spec's raw events: an id, the event time in epoch seconds, one source, features, label."""
    out = frame.drop(columns=EVENT_MS).reset_index(drop=True)
    out.insert(0, "id", [f"agr-{first + i}" for i in range(len(out))])
    return out.assign(t=frame[EVENT_MS].to_numpy() / 1000, source="agrawal")


def test_a_drift_at_the_window_end_moves_the_holdout_and_promotes_a_fresh_tree(stack, tmp_path: Path) -> None:
    data = agrawal(3)
    data[EVENT_MS] += int(time.time() * 1000) - 60_000 - int(data[EVENT_MS].iloc[-1])  # ends a minute ago
    features = [c for c in data.columns if c.startswith("f_")]
    spec_path = tmp_path / "agrawal.yaml"
    spec = sea_spec(spec_path, features)
    s = scoped_settings(
        stack,
        tmp_path,
        spec=str(spec_path),
        model={"family": "hoeffding_tree"},
        promotion={"min_holdout": 200, "min_positives": 20},
        retrain={"candidates": ["continue", "fresh"], "min_new_rows": 500},
        quality={"label_check": False},  # labels disagreeing with the champion are the drift here
    )
    history, batch = tmp_path / "history.parquet", tmp_path / "batch.parquet"
    _raw(data.iloc[:AGR_BOOT], 0).to_parquet(history)
    _raw(data.iloc[AGR_BOOT:], AGR_BOOT).to_parquet(batch)  # 3,000 rows of function 0, then 1,000 of 2
    drift_ms = int(data[EVENT_MS].iloc[-1_000])
    assert bootstrap(s, spec, from_file=history)["champion"] == "1"
    with prefect_api(s):
        out = retrain_flow(overrides=overrides_of(s), trigger="manual", batch_file=str(batch))
    change = out["change_point"]
    assert change["change"] == "detected" and change["holdout"] == "after the change", change
    selected, judged = out["window_as_selected"], out["window"]
    # as selected, the holdout (the window's newest quarter) is every row after the drift
    assert selected["holdout_from_ms"] == drift_ms and selected["holdout_rows"] == 1_000
    since = change["change_since_ms"]
    assert abs(since - drift_ms) <= 100_000  # located within 100 events (one a second)
    after = int((int(data[EVENT_MS].iloc[-1]) - since) / 1_000) + 1  # rows from the change on
    # moved: the newest quarter of the rows after the change, the one holdout every model is judged on
    assert judged["holdout_from_ms"] > since and abs(judged["holdout_rows"] - after / 4) <= 1
    assert out["holdout"]["n"] == judged["holdout_rows"]
    assert judged["train_rows"] + judged["validation_rows"] + judged["holdout_rows"] == 4_000  # none lost
    assert judged["train_to_ms"] < judged["validation_from_ms"] < judged["holdout_from_ms"]
    by, v = {c["candidate"]: c for c in out["candidates"]}, s.promotion.validation_fraction
    # continue: every row before the holdout, less the newest part for its threshold (validation)
    before = 4_000 - judged["holdout_rows"]
    assert by["continue"]["train_rows"] == judged["train_rows"] == before - int(v * before)
    # fresh: only the rows after the change before the holdout, less their validation part
    fresh_rows = after - judged["holdout_rows"]
    assert by["fresh"]["train_rows"] == fresh_rows - int(v * fresh_rows), (by["fresh"], fresh_rows)
    assert out["outcome"] == "promote" and by["fresh"]["put_up"], out["reason"]
    f1 = {d["metric"]: d for d in out["decision"]}["f1"]
    assert f1["challenger"] > f1["champion"] + 0.2, f1
    promoted = out["promoted"]
    assert promoted == by["fresh"]["version"] and alias_version(s, CHAMPION) == promoted
    tags = client(s).get_model_version(s.mlflow.model_name, promoted).tags
    assert tags["rtml.window_since_ms"] == str(change["change_since_ms"])
