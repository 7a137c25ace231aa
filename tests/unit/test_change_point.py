"""Change-point-aware window of fresh candidates: ADWIN on synthetic champion error streams."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from rtml.features.featurise import EVENT_MS
from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import load_spec
from rtml.models.training.challenger import Window
from rtml.models.training.change_point import detect_change, since_change

SPEC = load_spec()


@pytest.mark.parametrize(("before", "after"), [(0.05, 0.25), (0.05, 0.15), (0.30, 0.10)])
def test_an_abrupt_change_of_the_error_rate_is_detected_and_located(before: float, after: float) -> None:
    rng = np.random.default_rng(1)
    errors = np.r_[rng.random(3000) < before, rng.random(2000) < after].astype(float)
    found = detect_change(errors)
    assert found is not None
    assert found.detected_at >= 3000  # ADWIN fires after the change, not before
    assert abs(found.index - 3000) <= 150  # located near the true change point


@pytest.mark.parametrize("seed", range(5))
def test_a_stationary_error_stream_shows_no_change(seed: int) -> None:
    errors = (np.random.default_rng(seed).random(5000) < 0.1).astype(float)
    assert detect_change(errors) is None


class _Scores:
    """A stub champion scoring every row 0.2 (column ``s``): its residuals are label - 0.2."""

    threshold = 0.5

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        return frame["s"].to_numpy()


def _window(n_old: int, n_new: int, n_hold: int = 1000, seed: int = 0) -> Window:
    """Positive rate 0.1 on the first ``n_old`` rows, 0.4 after them (a concept change the stub
    champion does not follow); the newest ``n_hold`` rows are the holdout, 20% before it validation."""
    rng = np.random.default_rng(seed)
    n = n_old + n_new + n_hold
    y = np.r_[rng.random(n_old) < 0.1, rng.random(n_new + n_hold) < 0.4].astype(int)
    frame = pd.DataFrame(
        {
            EVENT_MS: 1_000 * np.arange(n, dtype=np.int64),
            SPEC.label.field: np.where(y == 1, SPEC.label.positive, 0),
            "s": np.full(n, 0.2),
        }
    )
    rows, hold = frame.iloc[: n_old + n_new], frame.iloc[n_old + n_new :].reset_index(drop=True)
    n_val = len(rows) // 5
    return Window(
        rows.iloc[:-n_val].reset_index(drop=True),
        hold,
        {"train_rows": len(rows) - n_val},
        rows.iloc[-n_val:].reset_index(drop=True),
    )


CHAMPION = SimpleNamespace(learner=_Scores(), columns=["s"])


def test_fresh_candidates_train_after_the_change_and_keep_the_same_holdout() -> None:
    window = _window(3000, 2000)
    recent, info = since_change(Settings(), SPEC, CHAMPION, window)
    assert info["change"] == "detected"
    assert abs(info["change_rows_before"] - 3000) <= 150
    assert recent.holdout is window.holdout  # the same rows judge every candidate and the champion
    rows = len(recent.train) + len(recent.validation)
    assert rows == info["change_rows_after"] == 5000 - info["change_rows_before"]
    assert recent.train[EVENT_MS].min() == info["change_since_ms"] == recent.info["since_change_ms"]
    assert len(recent.validation) == int(rows * Settings().promotion.validation_fraction)
    assert recent.info["train_rows"] == len(recent.train)
    assert window.info == {"train_rows": 4000}  # the whole window (continue) is untouched


def test_too_few_rows_after_the_change_or_the_setting_off_keep_the_whole_window() -> None:
    window = _window(3000, 2000)
    few = Settings(retrain={"change_min_rows": 2500})
    same, info = since_change(few, SPEC, CHAMPION, window)
    assert same is window and info["change"].startswith("detected, but")
    off = Settings(retrain={"fresh_since_change": False})
    assert since_change(off, SPEC, CHAMPION, window) == (window, {"change": "off"})
    stationary = _window(5000, 0)
    assert since_change(Settings(), SPEC, CHAMPION, stationary)[0] is stationary


@pytest.mark.parametrize("seed", range(5))
def test_a_drift_of_the_benchmark_size_is_found_in_a_short_window(seed: int) -> None:
    """SEA 0 -> 3 in benchmarks/drift_recovery.py: the stale champion's residual (label - score) moves
    from mean -0.19 (sd 0.36) to -0.32 (sd 0.40), 1,000 rows before the drift and 1,250 after it."""
    rng = np.random.default_rng(seed)
    residuals = np.clip(np.r_[rng.normal(-0.19, 0.36, 1000), rng.normal(-0.32, 0.40, 1250)], -1, 1)
    found = detect_change(residuals)
    assert found is not None and abs(found.index - 1000) <= 150


def test_a_concept_that_turns_at_an_unchanged_positive_rate_is_found() -> None:
    """y = x > 0.5, then y = x < 0.5: the positive rate stays 0.5 and the signed residual's mean with
    it; the absolute residual (how wrong the champion is) moves, and the change is found."""
    rng = np.random.default_rng(4)
    n_old, n_new, n_hold = 1500, 1500, 500
    x = rng.random(n_old + n_new + n_hold)
    y = np.r_[x[:n_old] > 0.5, x[n_old:] < 0.5].astype(int)
    frame = pd.DataFrame(
        {
            EVENT_MS: 1_000 * np.arange(len(x), dtype=np.int64),
            SPEC.label.field: np.where(y == 1, SPEC.label.positive, 0),
            "s": 1 / (1 + np.exp(-10 * (x - 0.5))),  # the champion learned the first concept
        }
    )
    rows = frame.iloc[: n_old + n_new]
    window = Window(rows.iloc[:2400], frame.iloc[n_old + n_new :], {}, rows.iloc[2400:])
    champion = SimpleNamespace(learner=SimpleNamespace(score=lambda f: f["s"].to_numpy()), columns=["s"])
    recent, info = since_change(Settings(), SPEC, champion, window)
    assert info["change"] == "detected" and abs(info["change_rows_before"] - n_old) <= 150
    assert len(recent.train) + len(recent.validation) == info["change_rows_after"]


def test_rare_positives_after_the_change_keep_the_whole_window() -> None:
    """Fraud-like rates: 500+ rows after a change may hold a handful of positives, too few to train a
    classifier and set its threshold on; the fresh candidates keep the whole window, and say why."""
    window = _window(3000, 2000)
    strict = Settings(promotion={"min_positives": 2000})
    same, info = since_change(strict, SPEC, CHAMPION, window)
    assert same is window
    assert info["change"].startswith("detected, but") and "promotion.min_positives" in info["change"]


LATE = Settings(promotion={"min_holdout": 200})


def test_a_change_too_recent_to_train_after_moves_the_holdout_after_it() -> None:
    """The first retrain after a drift: 300 training rows follow the change (< change_min_rows), the
    holdout (1,000 rows) is all after it. The window is split again: the holdout is the newest quarter
    of the 1,300 rows after the change, fresh candidates train on the rest of them, continue on every
    row before the holdout; no row is lost."""
    from rtml.models.training.change_point import resplit_after_change

    window = _window(3500, 300)
    assert since_change(LATE, SPEC, CHAMPION, window)[0] is window  # too few training rows after it
    judged, recent, info = resplit_after_change(LATE, SPEC, CHAMPION, window)
    assert info["change"] == "detected" and info["holdout"] == "after the change"
    assert abs(info["change_rows_before"] - 3500) <= 150  # found on the rows before the new holdout
    n_hold = info["holdout_rows"]
    assert recent.holdout is judged.holdout and len(judged.holdout) == n_hold
    assert abs(n_hold - int(1300 * 0.25)) <= 40  # a quarter of the rows after the change
    assert info["change_rows_before"] + info["change_rows_after"] + n_hold == len(window.labelled)
    assert judged.holdout[EVENT_MS].min() > info["change_since_ms"]
    assert judged.holdout[EVENT_MS].max() == window.holdout[EVENT_MS].max()  # the newest rows
    fresh_rows = pd.concat([recent.train, recent.validation])
    assert len(fresh_rows) == info["change_rows_after"]
    assert fresh_rows[EVENT_MS].min() == info["change_since_ms"] == recent.info["since_change_ms"]
    assert fresh_rows[EVENT_MS].max() < judged.holdout[EVENT_MS].min()
    assert len(judged.train) + len(judged.validation) + len(judged.holdout) == len(window.labelled)
    assert judged.validation[EVENT_MS].max() < judged.holdout[EVENT_MS].min()
    assert judged.info["holdout_rows"] == len(judged.holdout) and "holdout_offsets_p0" not in judged.info
    assert recent.info["train_rows"] == len(recent.train)


def test_the_holdout_stays_when_the_change_can_be_trained_after_or_judged_on_too_few_rows() -> None:
    from rtml.models.training.change_point import resplit_after_change

    assert resplit_after_change(LATE, SPEC, CHAMPION, _window(3000, 2000)) is None  # since_change's case
    assert resplit_after_change(LATE, SPEC, CHAMPION, _window(5000, 0, n_hold=0)) is None  # no change
    assert resplit_after_change(Settings(), SPEC, CHAMPION, _window(3500, 300)) is None  # < min_holdout
    off = Settings(promotion={"min_holdout": 200}, retrain={"fresh_since_change": False})
    assert resplit_after_change(off, SPEC, CHAMPION, _window(3500, 300)) is None
    assert resplit_after_change(LATE, SPEC, CHAMPION, _window(4000, 0, n_hold=300)) is None  # 300 rows
    # 900 rows after the change: its quarter is a holdout of 225 rows, 675 remain to find it and
    # train after it; with change_min_rows 700 they are too few
    strict = Settings(promotion={"min_holdout": 200}, retrain={"change_min_rows": 700})
    assert resplit_after_change(strict, SPEC, CHAMPION, _window(3500, 0, n_hold=900)) is None
    assert resplit_after_change(LATE, SPEC, CHAMPION, _window(3500, 0, n_hold=900)) is not None


def test_rows_tied_with_the_moved_holdouts_first_event_time_stay_out_of_training() -> None:
    """Event times in whole seconds, two events a second: a row sharing the new holdout's first
    second is neither trained on (a watermark at that second would skip the holdout's rows next
    time) nor judged; every other row is in exactly one split."""
    from rtml.models.training.change_point import resplit_after_change

    ties = []
    for drop in range(4):  # shifts where the holdout starts against the pairs of events a second
        window = _window(3500, 300)
        for part in (window.train, window.validation, window.holdout):
            part[EVENT_MS] = part[EVENT_MS] // 2_000 * 1_000
        window.holdout = window.holdout.iloc[drop:].reset_index(drop=True)
        judged, recent, info = resplit_after_change(LATE, SPEC, CHAMPION, window)
        start = judged.holdout[EVENT_MS].min()
        fitted = pd.concat([judged.train, judged.validation, recent.train, recent.validation])
        assert fitted[EVENT_MS].max() < start
        rows = len(judged.train) + len(judged.validation) + len(judged.holdout)
        tied = int((window.labelled[EVENT_MS] == start).sum() - (judged.holdout[EVENT_MS] == start).sum())
        assert rows + tied == len(window.labelled) and tied in (0, 1)
        ties.append(tied)
    assert 1 in ties and 0 in ties  # both placements were met
