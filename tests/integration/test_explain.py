"""Explanations with every score, on the real broker, Spark local mode and MLflow (session stack)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from rtml.flows.bootstrap import bootstrap
from rtml.infra.config.spec import load_spec
from rtml.pipelines.producer import generated_frames, stream_frames
from rtml.pipelines.score_job import run_scoring
from tests.helpers import RTML, afternoon_ms, read_topic, rtml, scoped_settings, settings_env, sink_frame

pytestmark = pytest.mark.integration

#: What the generator changes to make a pre-drift fraud (pipelines/generator.py): amount and distance
#: from home, card not present (online), risky merchant categories, night hours, bursts on one card.
FRAUD_FEATURES = {"amount", "distance_from_home_km"}


def test_every_score_carries_its_top_3_and_rtml_explain_names_the_fraud_features(
    stack, tmp_path: Path
) -> None:
    s = scoped_settings(stack, tmp_path, scoring={"explain_top_k": 3})
    spec = load_spec()
    at = afternoon_ms()  # one time of day: a history spanning 00:00 or 06:00 made event_hour v1's top
    assert bootstrap(s, spec, n=8000, now_ms=at)["champion"] == "1"  # sgd_logistic, the default family
    frames = list(generated_frames(spec, 3000, 41, None, 1000, start_ms=at - 1_500_000))
    stream_frames(s, spec, iter(frames), malformed_rate=0.02, seed=41)
    truth = pd.concat(frames).set_index(spec.event_id)["is_fraud"]

    summary = run_scoring(s, spec, available_now=True)
    assert summary["scored"] > 2800 and summary["explained"] == summary["scored"]

    scores = sink_frame(s, "scores")
    assert len(scores) == summary["scored"]
    names = scores[[f"explain_{i}_feature" for i in (1, 2, 3)]].to_numpy()
    values = scores[[f"explain_{i}_contribution" for i in (1, 2, 3)]].to_numpy()
    assert set(names.ravel()) <= set(spec.model_inputs)  # named model inputs, one-hot under their name
    assert all(len(set(row)) == 3 for row in names)  # three different features on every row
    assert np.isfinite(values).all() and (values > 0).any() and (values < 0).any()  # signed
    assert (np.abs(values[:, 0]) >= np.abs(values[:, 1])).all()
    assert (np.abs(values[:, 1]) >= np.abs(values[:, 2])).all()
    assert set(scores["explain_output"]) == {"log_odds"}
    raw = scores["explain_base"].to_numpy() + values.sum(1) + scores["explain_rest"].to_numpy()
    np.testing.assert_allclose(expit(raw), scores["score"], rtol=1e-9, atol=1e-12)  # they make the score

    on_topic = [json.loads(r.value) for r in read_topic(s, s.kafka.topics.scores)]
    assert len(on_topic) == len(scores)
    by_id = scores.set_index(spec.event_id)
    for msg in on_topic[:200]:
        row = by_id.loc[msg[spec.event_id]]
        assert list(msg["explanation"]) == [row[f"explain_{i}_feature"] for i in (1, 2, 3)]
        first = msg["explanation"][row["explain_1_feature"]]  # rounded to 6 decimals on the topic
        assert first == pytest.approx(row["explain_1_contribution"], abs=1e-6)

    flagged = scores[(scores["decision"] == 1) & scores[spec.event_id].map(truth).eq(1)]
    assert len(flagged) >= 10, "the champion should flag some of the generated fraud"
    in_top = flagged[[f"explain_{i}_feature" for i in (1, 2, 3)]].isin(FRAUD_FEATURES).any(axis=1)
    assert in_top.mean() >= 0.9, flagged[[f"explain_{i}_feature" for i in (1, 2, 3)]].head(20)

    event_id = flagged.sort_values("score", ascending=False)[spec.event_id].iloc[0]
    done = subprocess.run(
        [RTML, "explain", event_id, "--json"],
        env=settings_env(s),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert shown["event"]["event_id"] == event_id and shown["model_version"] == "1"
    assert shown["score"] == pytest.approx(float(by_id.loc[event_id, "score"]))
    assert shown["features"]["amount"] == pytest.approx(float(by_id.loc[event_id, "amount"]))
    top = shown["explanation"]["top"]
    assert len(top) == 3 and shown["explanation"]["output"] == "log_odds"
    named = {t["feature"] for t in top if t["contribution"] > 0}  # pushing towards fraud
    assert named & FRAUD_FEATURES, top
    assert float(expit(shown["explanation"]["raw"])) == pytest.approx(shown["score"], rel=1e-9)

    text = subprocess.run(
        [RTML, "explain", event_id], env=settings_env(s), capture_output=True, text=True, timeout=120
    )
    assert text.returncode == 0 and "why: top 3 contributions to the log-odds" in text.stdout
    assert (named & FRAUD_FEATURES).pop() in text.stdout
    code, models, err = rtml("models", "--json", env=settings_env(s))
    assert code == 0, err[-2000:]
    importance = models["versions"][0]["importance"]  # mean |contribution| on v1's holdout
    assert set(importance) == set(spec.model_inputs) and min(importance.values()) >= 0
    assert max(importance, key=importance.get) in FRAUD_FEATURES | {"card_present", "merchant_category"}

    missing = subprocess.run(
        [RTML, "explain", "tx-none"], env=settings_env(s), capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 1 and "not in the score sink" in missing.stderr
