"""The worker-side scorer: score rows from a featurised frame (pure logic, a stand-in learner)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from rtml.features.featurise import EVENT_MS, featurise_history
from rtml.infra.config.spec import load_spec
from rtml.pipelines.generator import CardTransactionGenerator, to_event_frame
from rtml.pipelines.scorer import KAFKA_MS, score_arrow_schema, score_columns, score_frame, task_model_version


class _AmountLearner:
    """Scores by amount, so the expected score of every row is known."""

    threshold = 0.5

    def score(self, X: pd.DataFrame) -> np.ndarray:
        return (X["amount"].to_numpy() > 100).astype(float) * 0.9


def _frame(n: int = 50) -> pd.DataFrame:
    spec = load_spec()
    events = to_event_frame(CardTransactionGenerator(seed=3, n_cards=20).batch(n), spec)
    frame = featurise_history(events, spec)
    frame["partition"] = np.zeros(n, dtype=np.int32)
    frame["offset"] = np.arange(n, dtype=np.int64)
    frame["_reason"] = None
    frame["value"] = None
    frame["topic"] = "events"
    frame[KAFKA_MS] = int(time.time() * 1000) - 1500
    return frame


def test_score_rows_carry_version_latency_and_inputs() -> None:
    spec = load_spec()
    frame = _frame()
    frame.loc[[3, 7], "_reason"] = "out_of_range:amount"
    model = SimpleNamespace(learner=_AmountLearner(), columns=spec.model_inputs)
    out = score_frame(frame, spec, model, "7")
    assert list(out.columns) == [n for n, _ in score_columns(spec)]
    valid = frame["_reason"].isna().to_numpy()
    expected = (frame["amount"].to_numpy() > 100) * 0.9
    assert set(expected[valid]) == {0.0, 0.9}  # both decisions occur
    assert np.allclose(out["score"].to_numpy()[valid], expected[valid])
    assert out["score"].isna().to_numpy()[~valid].all()  # invalid rows are not scored
    assert (out["decision"].to_numpy() == np.where(valid, expected >= 0.5, False)).all()
    assert set(out["model_version"]) == {"7"}
    assert out["latency_ms"].between(1500, 60_000).all()
    assert (out["scored_at_ms"] - out[KAFKA_MS] == out["latency_ms"]).all()
    assert out[EVENT_MS].tolist() == frame[EVENT_MS].tolist()
    assert len(score_arrow_schema(spec)) == len(out.columns)


def test_scoring_outside_a_spark_task_names_the_missing_version() -> None:
    with pytest.raises(RuntimeError, match="rtml.model.version"):
        task_model_version()
