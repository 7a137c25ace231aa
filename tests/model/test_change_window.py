"""Model tier: after a concept drift, a fresh candidate trained from the change point found in the
champion's labelled error stream beats one trained on the mixed window, on the same post-change
holdout (real learners, River's SEA generator switching its concept)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rtml.features.featurise import EVENT_MS
from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec, load_spec
from rtml.models.evaluation.metrics import classification_metrics
from rtml.models.lifecycle.registry import _pyfunc_class
from rtml.models.training.bootstrap import train_initial
from rtml.models.training.challenger import labels_of, select_window, train_challenger
from rtml.models.training.change_point import since_change

BOOT, DRIFT, N = 3_000, 4_500, 8_000  # bootstrap rows; window rows before the drift, after it


def sea(seed: int) -> pd.DataFrame:
    """SEA variant 0, then variant 3 (a new concept), 5% label noise; one event a second."""
    from river.datasets import synth

    before = synth.SEA(variant=0, noise=0.05, seed=seed).take(BOOT + DRIFT)
    after = synth.SEA(variant=3, noise=0.05, seed=seed + 1).take(N - DRIFT)
    rows = [{**{f"f_{k}": float(v) for k, v in x.items()}, "y": int(y)} for x, y in [*before, *after]]
    frame = pd.DataFrame(rows)
    return frame.assign(**{EVENT_MS: 1_700_000_000_000 + 1_000 * np.arange(len(frame), dtype=np.int64)})


def sea_spec(path: Path, features: list[str] | None = None) -> StreamSpec:
    """A spec of numeric generator features (SEA's three by default) and the label ``y``."""
    spec = {
        "name": path.stem,
        "task": "classification",
        "event_id": "id",
        "event_time": "t",
        "event_time_format": "epoch_s",
        "entity_key": "source",
        "features": [{"name": f, "type": "double"} for f in features or [f"f_{i}" for i in range(3)]],
        "label": {"field": "y", "type": "long", "positive": 1},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_spec(path)


@pytest.mark.parametrize("seed", [1, 7, 11])
def test_a_fresh_candidate_trained_after_the_change_beats_one_trained_on_the_mixed_window(
    seed: int, tmp_path: Path
) -> None:
    spec = sea_spec(tmp_path / "sea.yaml")
    data = sea(seed)
    learner, _, X, _ = train_initial(spec, data.iloc[:BOOT], seed=seed)
    champion = _pyfunc_class()(learner, list(X.columns))
    settings = Settings(promotion={"min_holdout": 500, "min_positives": 20})
    drift_ms = int(data[EVENT_MS].iloc[BOOT + DRIFT])
    window = select_window(data, spec, settings, int(data[EVENT_MS].iloc[BOOT - 1]), now_ms=drift_ms)
    assert window.train[EVENT_MS].min() < drift_ms < window.validation[EVENT_MS].min()
    assert window.holdout[EVENT_MS].min() > drift_ms  # the holdout is the new concept
    recent, change = since_change(settings, spec, champion, window)
    assert change["change"] == "detected", change
    assert abs(change["change_since_ms"] - drift_ms) <= 300_000  # located within 300 events
    assert recent.holdout is window.holdout and len(recent.train) < len(window.train)
    y = labels_of(window.holdout, spec)
    f1 = {}
    for name, w in (("mixed", window), ("since_change", recent)):
        fresh = train_challenger(champion, w, spec, "full", seed=seed, record={})
        pred = (fresh.score(window.holdout[champion.columns]) >= fresh.threshold).astype(int)
        f1[name] = classification_metrics(y, pred)["f1"]
    assert f1["since_change"] > f1["mixed"], f1


AGR_BOOT, AGR_OLD, AGR_NEW = 3_000, 3_000, 1_000  # bootstrap rows; window rows before the drift, after it


def agrawal(seed: int) -> pd.DataFrame:
    """Agrawal function 0, then function 2 (another rule on age and salary); one event a second."""
    from river.datasets import synth

    before = synth.Agrawal(classification_function=0, seed=seed, balance_classes=True)
    after = synth.Agrawal(classification_function=2, seed=seed + 1, balance_classes=True)
    before, after = before.take(AGR_BOOT + AGR_OLD), after.take(AGR_NEW)
    rows = [{**{f"f_{k}": float(v) for k, v in x.items()}, "y": int(y)} for x, y in [*before, *after]]
    frame = pd.DataFrame(rows)
    return frame.assign(**{EVENT_MS: 1_700_000_000_000 + 1_000 * np.arange(len(frame), dtype=np.int64)})


@pytest.mark.parametrize("seed", [3, 7])
def test_the_first_retrain_after_a_drift_promotes_a_fresh_tree_judged_after_the_change(
    seed: int, tmp_path: Path
) -> None:
    """Labels of the 1,000 events after the drift are all the window has of the new concept, and the
    holdout as selected (its newest quarter) is exactly those: no fresh candidate can learn the new
    concept and the stale champion stays. With the holdout moved after the change, a fresh tree
    trained on the rows after the change before it beats the champion on P, R and F1 there."""
    from rtml.models.training.change_point import resplit_after_change
    from rtml.models.training.retrain import evaluate, policy_of

    data = agrawal(seed)
    spec = sea_spec(tmp_path / "agrawal.yaml", [c for c in data.columns if c.startswith("f_")])
    learner, _, X, _ = train_initial(spec, data.iloc[:AGR_BOOT], seed=seed, family="hoeffding_tree")
    champion = _pyfunc_class()(learner, list(X.columns))
    settings = Settings(promotion={"min_holdout": 200, "min_positives": 20}, retrain={"epochs": 5})
    drift_ms = int(data[EVENT_MS].iloc[AGR_BOOT + AGR_OLD])
    window = select_window(data, spec, settings, int(data[EVENT_MS].iloc[AGR_BOOT - 1]), now_ms=drift_ms)
    assert window.holdout[EVENT_MS].min() == drift_ms  # as selected: every post-drift row is held out
    assert since_change(settings, spec, champion, window)[0] is window
    judged, recent, change = resplit_after_change(settings, spec, champion, window)
    assert abs(change["change_since_ms"] - drift_ms) <= 100_000  # located within 100 events
    assert judged.holdout[EVENT_MS].min() > drift_ms and recent.train[EVENT_MS].min() >= drift_ms - 100_000
    fresh = train_challenger(champion, recent, spec, "full", seed=seed, epochs=5, record={})
    decision = evaluate(policy_of(settings), spec, champion, fresh, judged)
    assert decision.promote, decision.reason
    assert decision.challenger["f1"] > decision.champion["f1"] + 0.2, (decision.challenger, decision.champion)
