"""The incremental label join matches a from-scratch join, and a refresh with nothing new does no work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from rtml.infra.config.settings import load_settings
from rtml.infra.config.spec import load_spec
from rtml.pipelines.labelled import read_labelled, refresh_labelled
from rtml.pipelines.labels import INGEST_APP
from rtml.pipelines.tables import append, commit_batch, open_table

HOUR = 3_600_000
T0 = 1_764_000_000_000
SPEC = load_spec()
ID, LABEL = SPEC.event_id, SPEC.label.field


def _settings(tmp_path: Path):  # noqa: ANN202
    return load_settings(overrides={"state_dir": str(tmp_path)}, use_default_file=False)


def _scores(lo: int, hi: int) -> pa.Table:
    """Scored events lo..hi-1, one every 6 minutes of event time (10 an hour)."""
    n = np.arange(lo, hi)
    return pa.table(
        {
            ID: [f"e{i}" for i in n],
            "score": (n % 10) / 10.0,
            "decision": (n % 10 >= 8).astype("int64"),
            "scored_at_ms": T0 + n * 360_000,
            "_event_ms": T0 + n * 360_000,
        }
    )


def _labels(ids: list[int], value: int, at_ms: int) -> pa.Table:
    return pa.table(
        {ID: [f"e{i}" for i in ids], LABEL: [value] * len(ids), "labelled_at_ms": [at_ms] * len(ids)}
    )


def _from_scratch(s, now_ms: int) -> pd.DataFrame:  # noqa: ANN001
    """The oracle: the whole scores table joined to all labels (newest wins), horizon in event time."""
    scores = open_table(s, "scores").to_pandas().drop_duplicates(ID, keep="first")
    labels = open_table(s, "labels").to_pandas().sort_values("labelled_at_ms", kind="stable")
    labels = labels.drop_duplicates(ID, keep="last")[[ID, LABEL]]
    joined = scores.merge(labels, on=ID, how="left")
    expired = joined[LABEL].isna() & (joined["_event_ms"] <= now_ms - 2 * 24 * HOUR)
    joined.loc[expired, LABEL] = 0
    return joined[joined[LABEL].notna()].set_index(ID)[LABEL].astype(int).sort_index()


def _labelled(s) -> pd.Series:  # noqa: ANN001
    return read_labelled(s).set_index(ID)[LABEL].astype(int).sort_index()


def test_incremental_refreshes_match_a_from_scratch_join(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    seq = 0

    def label(ids: list[int], value: int, at: int) -> None:
        nonlocal seq
        seq += 1
        append(s, "labels", _labels(ids, value, at), {INGEST_APP: seq})

    # 3 days of events arrive in 6 batches; labels arrive late, some before their event is scored
    for b in range(6):
        commit_batch(s, "scores", _scores(b * 120, (b + 1) * 120), "q-scores", b)
        label(list(range(b * 120, b * 120 + 30, 3)), 1, T0 + b * 12 * HOUR + 1)  # frauds of this batch
        label([b * 120 + 200], 1, T0 + b * 12 * HOUR + 2)  # a label for an event not scored yet
        if b == 3:
            label([0, 3], 0, T0 + b * 12 * HOUR + 3)  # a corrected label: the newest wins
        r = refresh_labelled(s, SPEC)
        assert r["new_scored"] == 120
    now = int(T0 + 719 * 360_000)  # the newest event's time: the default clock
    expected = _from_scratch(s, now)
    got = _labelled(s)
    assert len(got) == len(expected) > 0
    pd.testing.assert_series_equal(got, expected, check_names=False)
    assert got["e0"] == 0 and got["e6"] == 1 and got["e200"] == 1  # corrected; and a label that waited
    # nothing new: no commit, no rows touched
    version = open_table(s, "labelled").version()
    r = refresh_labelled(s, SPEC)
    assert r["new_scored"] == 0 and r["new_labels"] == 0 and r["labelled"] == 0 and r["expired"] == 0
    assert open_table(s, "labelled").version() == version
    pending = refresh_labelled(s, SPEC)["pending"]
    oracle_pending = 720 - len(expected)
    assert pending == oracle_pending


def test_replayed_history_expires_by_event_time(tmp_path: Path) -> None:
    """A replay of events from long ago is not expired at once by the wall clock."""
    s = _settings(tmp_path)
    commit_batch(s, "scores", _scores(0, 10), "q-scores", 0)
    r = refresh_labelled(s, SPEC)
    assert r["expired"] == 0 and r["pending"] == 10 and read_labelled(s).empty
    commit_batch(s, "scores", _scores(490, 500), "q-scores", 1)  # 49 hours of event time later
    r = refresh_labelled(s, SPEC)
    assert r["expired"] == r["unlabelled_as_negative"] == 10 and r["pending"] == 10
    assert sorted(read_labelled(s)[ID]) == sorted(f"e{i}" for i in range(10))


def _events(times: dict[str, int]) -> pa.Table:
    ids, at = list(times), list(times.values())
    zeros = [0] * len(ids)
    return pa.table(
        {ID: ids, "score": [0.1] * len(ids), "decision": zeros, "scored_at_ms": at, "_event_ms": at}
    )


def test_an_event_scored_after_the_cut_passed_it_expires_whatever_its_day(tmp_path: Path) -> None:
    """A late partition or a replay scores an event older than a cut already taken: it closes at
    the next refresh, also on a UTC day before the last cut's (it stayed pending and uncounted)."""
    from rtml.infra.config.spec import parse_duration_seconds

    s = _settings(tmp_path)
    horizon = parse_duration_seconds(SPEC.label.horizon) * 1000
    day = 86_400_000
    newest = T0 - T0 % day + 2 * day + HOUR // 2  # 00:30 UTC: the cut falls at 00:30 too
    commit_batch(s, "scores", _events({"a": newest - 3 * day, "b": newest}), "q-scores", 0)
    assert refresh_labelled(s, SPEC)["expired"] == 1
    cut = newest - horizon
    # older than the cut already taken, on the UTC day before it; the cut moves on 10 minutes
    commit_batch(s, "scores", _events({"late": cut - HOUR, "c": newest + 600_000}), "q-scores", 1)
    r = refresh_labelled(s, SPEC)
    assert r["expired"] == r["unlabelled_as_negative"] == 1 and r["pending"] == 2
    # the same while the cut stays where it is (nothing newer arrived)
    commit_batch(s, "scores", _events({"later": cut - 2 * day}), "q-scores", 2)
    r = refresh_labelled(s, SPEC)
    assert r["expired"] == 1 and r["pending"] == 2
    assert sorted(read_labelled(s)[ID]) == ["a", "late", "later"]
    assert refresh_labelled(s, SPEC)["expired"] == 0  # nothing new: nothing closes again


def test_a_label_ingest_replayed_after_a_crash_commits_nothing(tmp_path: Path) -> None:
    from rtml.pipelines.labels import _append_labels

    s = _settings(tmp_path)
    frame = _labels([1, 2], 1, T0).to_pandas()
    _append_labels(s, SPEC, frame, 1)
    _append_labels(s, SPEC, frame, 1)  # the offsets were not saved: the same read again
    assert len(open_table(s, "labels").to_pandas()) == 2
    _append_labels(s, SPEC, frame.assign(**{LABEL: 0}), 2)
    assert len(open_table(s, "labels").to_pandas()) == 4


def test_pending_is_counted_under_drop_and_dropped_events_are_not_read(tmp_path: Path) -> None:
    spec = SPEC.model_copy(
        update={"label": SPEC.label.model_copy(update={"unlabelled_after_horizon": "drop"})}
    )
    s = _settings(tmp_path)
    commit_batch(s, "scores", _scores(0, 10), "q-scores", 0)
    append(s, "labels", _labels([2], 1, T0 + HOUR), {INGEST_APP: 1})
    r = refresh_labelled(s, spec)
    assert (r["pending"], r["labelled"]) == (9, 1)
    commit_batch(s, "scores", _scores(490, 500), "q-scores", 1)
    r = refresh_labelled(s, spec)
    assert r["expired"] == 9 and r["unlabelled_as_negative"] == 0 and r["pending"] == 10
    assert read_labelled(s)[ID].tolist() == ["e2"]


def test_a_window_is_read_again_at_the_version_it_was_read_at(tmp_path: Path) -> None:
    from rtml.pipelines.labelled import labelled_version

    s = _settings(tmp_path)
    commit_batch(s, "scores", _scores(0, 10), "q-scores", 0)
    append(s, "labels", _labels([1, 2], 1, T0), {INGEST_APP: 1})
    refresh_labelled(s, SPEC)
    version = labelled_version(s)
    first = read_labelled(s)
    append(s, "labels", _labels([3, 4, 5], 1, T0 + 1), {INGEST_APP: 2})
    refresh_labelled(s, SPEC)
    assert len(read_labelled(s)) == 5
    again = read_labelled(s, version=version)
    assert again[ID].tolist() == first[ID].tolist() == ["e1", "e2"]
