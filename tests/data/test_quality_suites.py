"""Data tier: the Great Expectations suites on real GE, no services needed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from rtml.expectations.gate import validate
from rtml.expectations.suites import SHIPPED, SUITES, suite_path, write_suites
from rtml.features.featurise import featurise_history
from rtml.infra.config.settings import load_settings
from rtml.infra.config.spec import load_spec
from rtml.models.monitoring.profile import build_profile
from tests.helpers import POISONS, labelled_batch, poison

SPEC = load_spec()
SETTINGS = load_settings(use_default_file=False)


@pytest.fixture(scope="module")
def reference() -> dict:
    history = labelled_batch(20_000, seed=3, start_ms=0)  # labelled, as bootstrap's reference is:
    return build_profile(featurise_history(history, SPEC), SPEC, labels=history["is_fraud"].to_numpy())


@pytest.fixture(scope="module")
def clean():
    return labelled_batch(4_000, seed=11)


def test_committed_suites_are_the_generated_ones_plus_hand_written(tmp_path: Path) -> None:
    shutil.copytree(SHIPPED, tmp_path, dirs_exist_ok=True)
    write_suites(SPEC, tmp_path)
    for suite in SUITES:
        shipped = json.loads(suite_path(SPEC, suite).read_text())
        assert json.loads(suite_path(SPEC, suite, tmp_path).read_text()) == shipped, suite
    hand = [
        e
        for s in SUITES
        for e in json.loads(suite_path(SPEC, s).read_text())["expectations"]
        if e["meta"]["rtml"] == "hand"
    ]
    assert len(hand) >= 2


def test_clean_batch_passes_every_expectation(clean, reference: dict) -> None:
    result = validate(clean, "training_batch", SPEC, SETTINGS, reference, render=True)
    assert result.passed, result.failed_names()
    assert result.rows == 4_000 and result.evaluated >= 20
    assert "<html" in result.html.lower()
    events = clean.drop(columns=["is_fraud"])
    assert validate(events, "raw_events", SPEC, SETTINGS, render=False).passed


def test_positive_rate_bounds_follow_the_reference_rate(clean, reference: dict) -> None:
    result = validate(clean, "training_batch", SPEC, SETTINGS, reference, render=False)
    rate = reference["positive_rate"]
    assert 0.005 < rate < 0.05  # the generator's fraud rate, not a constant in settings
    assert result.parameters["positive_rate_min"] == pytest.approx(rate / 10)
    assert result.parameters["positive_rate_max"] == pytest.approx(rate * 10)
    flipped = poison(clean, "label_flips")  # half the labels flipped: a 50% rate is far outside
    failed = validate(flipped, "training_batch", SPEC, SETTINGS, reference, render=False).failed_names()
    assert "expect_column_mean_to_be_between(is_fraud)" in failed


@pytest.mark.parametrize("kind", sorted(POISONS))
def test_each_poison_is_blocked_and_named(kind: str, clean, reference: dict) -> None:
    result = validate(poison(clean, kind), "training_batch", SPEC, SETTINGS, reference, render=False)
    assert not result.passed
    assert POISONS[kind] in result.failed_names(), result.failed_names()


def test_raw_events_suite_catches_future_times_unknown_columns_and_categories(clean) -> None:
    events = clean.drop(columns=["is_fraud"]).head(500).copy()
    in_a_year = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=365)  # well past spec.max_future_seconds
    events.loc[events.index[:5], "event_time"] = in_a_year.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    events.loc[events.index[5:10], "channel"] = "teleport"
    events["surprise"] = 1
    failed = validate(events, "raw_events", SPEC, SETTINGS, render=False).failed_names()
    assert "expect_column_values_to_be_between(_event_ms)" in failed
    assert "expect_column_values_to_be_in_set(channel)" in failed
    assert "expect_table_columns_to_match_set" in failed


def test_scores_suite_bounds_scores_and_needs_a_version() -> None:
    import pandas as pd

    good = pd.DataFrame(
        {"transaction_id": ["a", "b"], "score": [0.0, 1.0], "decision": [0, 1], "model_version": ["3", "3"]}
    )
    assert validate(good, "scores", SPEC, SETTINGS, render=False).passed
    bad = good.assign(model_version=[None, "3"], score=[0.2, float("nan")])
    failed = validate(bad, "scores", SPEC, SETTINGS, render=False).failed_names()
    assert {
        "expect_column_values_to_not_be_null(model_version)",
        "expect_column_values_to_not_be_null(score)",
    } <= set(failed)


def test_booleans_stored_as_model_inputs_pass_and_other_numbers_do_not(clean, reference: dict) -> None:
    as_stored = clean.assign(card_present=clean["card_present"].astype(float))  # how the sinks keep them
    assert validate(as_stored, "training_batch", SPEC, SETTINGS, reference, render=False).passed
    bad = as_stored.assign(card_present=as_stored["card_present"].where(as_stored.index % 7 > 0, 0.5))
    failed = validate(bad, "training_batch", SPEC, SETTINGS, reference, render=False).failed_names()
    assert "expect_column_values_to_be_in_type_list(card_present)" in failed
