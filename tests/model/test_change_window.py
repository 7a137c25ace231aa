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


def sea_spec(path: Path) -> StreamSpec:
    spec = {
        "name": "sea",
        "task": "classification",
        "event_id": "id",
        "event_time": "t",
        "event_time_format": "epoch_s",
        "entity_key": "source",
        "features": [{"name": f"f_{i}", "type": "double"} for i in range(3)],
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
