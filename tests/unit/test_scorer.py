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
from rtml.pipelines.scorer import (
    KAFKA_MS,
    score_arrow_schema,
    score_columns,
    score_frame,
    task_batch_id,
    task_model_version,
)


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


def _trained_sgd(spec):  # noqa: ANN001, ANN202
    from rtml.models.learners.sgd_logistic import SGDLogistic

    gen = CardTransactionGenerator(seed=5, n_cards=200)
    raw = gen.batch(6000)
    history = featurise_history(to_event_frame(raw, spec), spec)
    from rtml.features.featurise import model_frame

    learner = SGDLogistic.for_spec(spec, seed=0)
    for _ in range(3):
        learner.learn(model_frame(history, spec), raw["is_fraud"].to_numpy())
    return learner


def test_score_rows_carry_their_top_k_explanation() -> None:
    import json

    import pyarrow as pa
    from scipy.special import logit

    from rtml.pipelines.explanations import explain_top_k_of, explanation_of, with_explanations

    spec = load_spec()
    frame = _frame(200)
    frame.loc[[3, 7], "_reason"] = "out_of_range:amount"
    model = SimpleNamespace(learner=_trained_sgd(spec), columns=spec.model_inputs)
    out = score_frame(frame, spec, model, "4", explain_top_k=3)
    plain = score_frame(frame, spec, model, "4")
    assert list(out.columns) == [n for n, _ in score_columns(spec, 3)] and explain_top_k_of(out.columns) == 3
    assert len(score_arrow_schema(spec, 3)) == len(out.columns) == len(plain.columns) + 9
    np.testing.assert_array_equal(out["score"].to_numpy(), plain["score"].to_numpy())  # same scores
    valid = frame["_reason"].isna().to_numpy()
    names = out[["explain_1_feature", "explain_2_feature", "explain_3_feature"]].to_numpy()
    values = out[["explain_1_contribution", "explain_2_contribution", "explain_3_contribution"]].to_numpy()
    assert set(names[valid].ravel()) <= set(spec.model_inputs)
    assert all(len(set(row)) == 3 for row in names[valid])  # three different features per row
    assert (np.abs(values[valid, 0]) >= np.abs(values[valid, 1])).all()
    assert pd.isna(names[~valid]).all() and np.isnan(values[~valid]).all()  # invalid rows: no explanation
    total = out["explain_base"] + values.sum(1) + out["explain_rest"]
    np.testing.assert_allclose(total[valid], logit(out["score"][valid]), rtol=1e-6, atol=1e-6)
    assert set(out["explain_output"][valid]) == {"log_odds"}

    row = out[valid].iloc[0].to_dict()
    ex = explanation_of(row)
    assert ex is not None and [t["feature"] for t in ex["top"]] == list(names[valid][0])
    assert ex["raw"] == pytest.approx(float(logit(row["score"])), abs=1e-6)
    every = score_frame(_frame(200), spec, model, "4", explain_top_k=3)  # no invalid row: no masking
    assert every["explain_3_feature"].notna().all() and every["explain_base"].notna().all()
    assert set(every["explain_output"]) == {"log_odds"}
    table = pa.Table.from_pandas(out, preserve_index=False)
    lines = out[["transaction_id", "score"]].to_json(orient="records", lines=True).splitlines()
    sent = [json.loads(line) for line in with_explanations(lines, table, 3)]
    assert [m["transaction_id"] for m in sent] == out["transaction_id"].tolist()
    first = sent[int(np.flatnonzero(valid)[0])]["explanation"]
    assert list(first) == list(names[valid][0]) and first[names[valid][0][0]] == round(values[valid][0, 0], 6)
    assert sent[3]["explanation"] is None and sent[7]["explanation"] is None  # invalid rows: null
    plain_lines = with_explanations(lines, pa.Table.from_pandas(score_frame(frame, spec, model, "4", 0)), 0)
    assert all(json.loads(line)["explanation"] is None for line in plain_lines)


def test_a_family_that_does_not_explain_scores_with_empty_explanations() -> None:
    from rtml.pipelines.explanations import explanation_of

    spec = load_spec()
    frame = _frame()
    model = SimpleNamespace(learner=_AmountLearner(), columns=spec.model_inputs)
    out = score_frame(frame, spec, model, "7", explain_top_k=2)
    assert out["score"].notna().all() and out["explain_1_feature"].isna().all()
    assert out["explain_base"].isna().all() and explanation_of(out.iloc[0].to_dict()) is None


class _StricterLearner(_AmountLearner):
    """A shadow: flags above 300 only."""

    def score(self, X: pd.DataFrame) -> np.ndarray:
        return (X["amount"].to_numpy() > 300).astype(float) * 0.8


def test_a_shadow_is_scored_in_the_same_pass_and_changes_no_champion_column() -> None:
    import pyarrow as pa

    from rtml.pipelines.shadow import shadow_rows

    spec = load_spec()
    frame = _frame(200)
    frame.loc[[3, 7], "_reason"] = "out_of_range:amount"
    champion = SimpleNamespace(learner=_AmountLearner(), columns=spec.model_inputs)
    shadow = SimpleNamespace(learner=_StricterLearner(), columns=spec.model_inputs)
    alone = score_frame(frame.copy(), spec, champion, "7")
    both = score_frame(frame.copy(), spec, champion, "7", shadow=(shadow, "9"))
    champion_cols = ["score", "decision", "model_version", EVENT_MS, spec.event_id]
    pd.testing.assert_frame_equal(alone[champion_cols], both[champion_cols])  # decisions unchanged
    assert alone["shadow_version"].isna().all() and alone["shadow_decision"].isna().all()
    valid = frame["_reason"].isna().to_numpy()
    amount = frame["amount"].to_numpy()
    assert (both["shadow_version"][valid] == "9").all() and both["shadow_version"][~valid].isna().all()
    assert np.allclose(both["shadow_score"].to_numpy()[valid], (amount[valid] > 300) * 0.8)
    assert (both["shadow_decision"][valid].to_numpy() == (amount[valid] > 300)).all()
    table = pa.Table.from_pandas(both, schema=score_arrow_schema(spec), preserve_index=False)
    rows = shadow_rows(table.filter(pa.array(valid)), spec)
    assert rows.num_rows == int(valid.sum()) and set(rows.column("role").to_pylist()) == {"shadow"}
    assert rows.column("champion_decision").to_pylist() == both["decision"][valid].tolist()


def test_state_outside_a_spark_task_names_the_missing_batch_id() -> None:
    with pytest.raises(RuntimeError, match="streaming.sql.batchId"):
        task_batch_id()
