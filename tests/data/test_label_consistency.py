"""Data tier: the label-consistency expectation on real Great Expectations, no services needed.

A champion is trained in-process as ``rtml bootstrap`` trains it; its reference profile carries the
label table. Clean windows pass; label flips that keep every column-level expectation green (a
rate-preserving swap, 5% of the negatives flipped) fail, and only on this expectation.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from rtml.expectations.gate import validate
from rtml.expectations.label_consistency import EXPECTATION
from rtml.expectations.suites import positive_rate_bounds
from rtml.features.featurise import EVENT_MS, featurise_history
from rtml.infra.config.settings import load_settings
from rtml.infra.config.spec import load_spec
from rtml.models.lifecycle.registry import _pyfunc_class
from rtml.models.monitoring.profile import build_profile, label_reference
from rtml.models.training.bootstrap import train_initial
from rtml.pipelines.generator import CardTransactionGenerator, to_event_frame
from tests.helpers import labelled_batch

SPEC = load_spec()
SETTINGS = load_settings(use_default_file=False)
# Yesterday 14:00 UTC: the generator makes night-time fraud three times as likely, so windows anchored at
# the wall clock would change their positive rate with the hour the suite runs at.
NOW = (int(time.time()) // 86_400 - 1) * 86_400_000 + 14 * 3_600_000


@pytest.fixture(scope="module")
def champion() -> tuple:
    history = labelled_batch(20_000, seed=3, start_ms=NOW - 4 * 86_400_000)
    learner, _, X, y = train_initial(SPEC, history)
    profile = build_profile(X, SPEC, scores=learner.score(X), labels=y)
    return _pyfunc_class()(learner, list(X.columns)), profile


def _window(n: int, seed: int, fraud_rate: float = 0.015, drift_at: int | None = None) -> pd.DataFrame:
    """A labelled batch file (event fields + label), like `rtml retrain --batch` reads."""
    gen = CardTransactionGenerator(
        seed=seed, start_ms=NOW - 3_600_000, fraud_rate=fraud_rate, drift_at=drift_at
    )
    frame = gen.batch(n)
    return to_event_frame(frame, SPEC).assign(is_fraud=frame["is_fraud"].to_numpy())


def _flip_negatives(frame: pd.DataFrame, share: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = frame["is_fraud"].to_numpy().copy()
    neg = np.flatnonzero(y == 0)
    y[rng.choice(neg, int(share * len(neg)), replace=False)] = 1
    return frame.assign(is_fraud=y)


def _swap(frame: pd.DataFrame, labels_share: float, seed: int = 0) -> pd.DataFrame:
    """Flip labels_share of all labels, half each way: the positive rate is unchanged."""
    rng = np.random.default_rng(seed)
    y = frame["is_fraud"].to_numpy().copy()
    k = int(labels_share * len(y) / 2)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    assert len(pos) >= k, "too few positives to swap"
    to_neg, to_pos = rng.choice(pos, k, replace=False), rng.choice(neg, k, replace=False)
    y[to_neg], y[to_pos] = 0, 1
    return frame.assign(is_fraud=y)


def _label_result(result) -> dict:  # noqa: ANN001
    [r] = [r for r in result.result_json["results"] if r["expectation_config"]["type"] == EXPECTATION]
    return r


def test_profile_records_the_label_table_and_reference_levels(champion: tuple) -> None:
    _, profile = champion
    table = profile["label_agreement"]
    assert len(table["negative_edges"]) == len(table["positive_edges"]) == 101
    assert table["rows_le"][100] + table["rows_ge"][0] >= profile["rows"]
    ref = label_reference(profile, SETTINGS.quality.label_low_quantile, SETTINGS.quality.label_high_quantile)
    assert ref["low_cut"] < ref["high_cut"]
    assert 0 <= ref["low_reference"] < 0.01 and 0 <= ref["high_reference"] < 0.1


@pytest.mark.parametrize("featurised", [False, True], ids=["batch_file", "labelled_store"])
def test_clean_window_passes_the_whole_training_suite(champion: tuple, featurised: bool) -> None:
    model, profile = champion
    clean = _window(4_000, seed=11)
    if featurised:  # the labelled store keeps the features the events were scored on
        clean = featurise_history(clean.assign(**{EVENT_MS: clean["event_time"].pipe(_ms)}), SPEC)
    result = validate(clean, "training_batch", SPEC, SETTINGS, profile, render=True, champion=model)
    assert result.passed, result.failed_names()
    assert result.skipped == {}
    r = _label_result(result)
    assert r["success"] and r["result"]["details"]["scored"] == 4_000
    assert r["result"]["details"]["low"]["rows"] > 2_000 and r["result"]["details"]["low"]["against"] <= 2
    assert "agree" in result.html.lower()  # rendered into the Data Docs


def _ms(times: pd.Series) -> pd.Series:
    return pd.to_datetime(times, utc=True, format="ISO8601").astype("int64") // 1_000_000


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_five_percent_of_negatives_flipped_fails_only_the_label_check(champion: tuple, seed: int) -> None:
    model, profile = champion
    clean = _window(4_000, seed=seed)
    bad = _flip_negatives(clean, 0.05, seed)
    bounds = positive_rate_bounds(SETTINGS.quality, profile)  # relative to the champion's reference
    assert bounds["positive_rate_min"] < bad["is_fraud"].mean() < bounds["positive_rate_max"]
    result = validate(bad, "training_batch", SPEC, SETTINGS, profile, render=False, champion=model)
    assert result.failed_names() == [EXPECTATION]
    low = _label_result(result)["result"]["details"]["low"]
    assert not low["passed"] and low["share"] > 0.04 and low["p_value"] < SETTINGS.quality.label_alpha
    assert "confident negatives labelled positive" in result.failures[0].describe()


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_rate_preserving_swap_of_five_percent_of_labels_fails_only_the_label_check(
    champion: tuple, seed: int
) -> None:
    model, profile = champion
    clean = _window(4_000, seed=seed, fraud_rate=0.1)  # enough positives to swap 5% of all labels
    bad = _swap(clean, 0.05, seed)
    assert bad["is_fraud"].sum() == clean["is_fraud"].sum()  # the positive rate is preserved
    assert (bad["is_fraud"] != clean["is_fraud"]).mean() == pytest.approx(0.05, abs=0.001)
    assert validate(clean, "training_batch", SPEC, SETTINGS, profile, render=False, champion=model).passed
    result = validate(bad, "training_batch", SPEC, SETTINGS, profile, render=False, champion=model)
    assert result.failed_names() == [EXPECTATION]


def test_concept_drift_with_clean_labels_is_not_taken_for_poisoning(champion: tuple) -> None:
    """After the generator's drift the champion misses the new fraud: that is what retraining is for."""
    model, profile = champion
    drifted = _window(20_000, seed=31, drift_at=0)
    result = validate(drifted, "training_batch", SPEC, SETTINGS, profile, render=False, champion=model)
    r = _label_result(result)
    assert r["success"], r["result"]["observed_value"]
    assert r["result"]["details"]["low"]["against"] > 20  # the champion does miss new fraud


def test_without_champion_or_when_off_the_check_is_skipped_and_says_why(champion: tuple) -> None:
    model, profile = champion
    bad = _flip_negatives(_window(2_000, seed=41), 0.05)
    no_model = validate(bad, "training_batch", SPEC, SETTINGS, profile, render=False)
    assert no_model.passed and no_model.skipped == {EXPECTATION: "no champion model given to score the batch"}
    assert any("no champion model" in s for s in no_model.summary()["skipped"])
    off = load_settings(use_default_file=False, overrides={"quality": {"label_check": False}})
    result = validate(bad, "training_batch", SPEC, off, profile, render=False, champion=model)
    assert result.passed and "quality.label_check: false" in result.skipped[EXPECTATION]
    old = {k: v for k, v in profile.items() if k != "label_agreement"}  # a version registered before
    result = validate(bad, "training_batch", SPEC, SETTINGS, old, render=False, champion=model)
    assert result.passed and "no label table" in result.skipped[EXPECTATION]


def test_a_window_the_champion_cannot_score_fails_with_the_reason(champion: tuple) -> None:
    model, profile = champion
    bad = _window(1_000, seed=51).drop(columns=["card_id"])
    result = validate(bad, "training_batch", SPEC, SETTINGS, profile, render=False, champion=model)
    [failure] = [f for f in result.failures if f.expectation == EXPECTATION]
    assert "cannot featurise the batch" in failure.describe()


@pytest.fixture(scope="module")
def anomaly_champion() -> tuple:
    """A streaming k-means champion: its scores are distances, its top scores unusual events."""
    history = labelled_batch(10_000, seed=3, start_ms=NOW - 4 * 86_400_000)
    params = {"k": 6, "half_life": 20.0}
    learner, _, X, y = train_initial(SPEC, history, seed=7, family="streaming_kmeans", params=params)
    profile = build_profile(X, SPEC, scores=learner.score(X), labels=y)
    return _pyfunc_class()(learner, list(X.columns)), profile


def test_an_anomaly_champion_checks_only_its_confident_negatives(anomaly_champion: tuple) -> None:
    """After the generator's drift every confident positive of a k-means champion was labelled negative
    (16/16 with this history, 2026-12-02): legitimate events that now look unusual, not poisoning."""
    model, profile = anomaly_champion
    drifted = _window(4_000, seed=31, drift_at=0)
    result = validate(drifted, "training_batch", SPEC, SETTINGS, profile, render=False, champion=model)
    assert result.passed, result.failed_names()
    [(name, why)] = result.skipped.items()
    assert name == f"{EXPECTATION} (confident positives)" and "not checked for an anomaly model" in why
    assert any("anomaly model" in s for s in result.summary()["skipped"])
    details = _label_result(result)["result"]["details"]
    assert details["high"]["rows"] == 0 and details["low"]["rows"] > 2_000
    assert result.parameters["label_high_cut"] > 1  # no score reaches it
    # poisoning still fails, on the confident negatives
    flipped = _flip_negatives(_window(4_000, seed=12), 0.05, 12)
    swapped = _swap(_window(4_000, seed=21, fraud_rate=0.1), 0.05, 21)
    for bad in (flipped, swapped):
        result = validate(bad, "training_batch", SPEC, SETTINGS, profile, render=False, champion=model)
        assert result.failed_names() == [EXPECTATION]
        assert "confident negatives labelled positive" in result.failures[0].describe()
    # a window it cannot score fails with the reason, and nothing is reported as skipped beside it
    unscorable = _window(1_000, seed=51).drop(columns=["card_id"])
    result = validate(unscorable, "training_batch", SPEC, SETTINGS, profile, render=False, champion=model)
    [failure] = [f for f in result.failures if f.expectation == EXPECTATION]
    assert "cannot featurise the batch" in failure.describe() and result.skipped == {}
