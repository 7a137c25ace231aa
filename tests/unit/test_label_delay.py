"""Labels lagging by a number of events (``rtml replay --label-delay-events``): pure queue logic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rtml.pipelines.producer import LabelQueue, _slices, label_slice


@pytest.mark.parametrize("delay", [0, 7, 120, 1000])
def test_each_label_follows_its_event_by_the_delay_and_at_most_one_slice_more(delay: int) -> None:
    n = 3000
    ids = np.array([f"e{i}" for i in range(n)])
    frame = pd.DataFrame({"id": ids, "y": np.arange(n) % 2})
    size = label_slice(delay) if delay else 500
    q = LabelQueue(delay_s=0, delay_events=delay)
    sent, released_at = 0, {}
    rng = np.random.default_rng(0)
    for part in _slices(iter([frame.iloc[:1700], frame.iloc[1700:]]), size):
        good = rng.random(len(part)) > 0.1  # malformed events get no label
        sent += len(part)
        q.add(part["id"].to_numpy()[good], part["y"].to_numpy()[good], sent - len(part), np.flatnonzero(good))
        for got, _ in q.due(sent):
            released_at.update(dict.fromkeys(got.tolist(), sent))
    tail = [i for got, _ in q.drain() for i in got.tolist()]
    released_at.update(dict.fromkeys(tail, n))
    for name, at in released_at.items():
        i = int(name[1:])
        if at < n:  # released during the stream: after event i + delay went out, within one slice
            assert i + delay + 1 <= at <= i + delay + size, (name, at)
        else:  # at the end: only events whose delay had not run out yet (or the last slice)
            assert i + delay + 1 > n - size
    assert len(released_at) == len(set(released_at))


def test_slices_keep_every_row_in_order() -> None:
    frames = [pd.DataFrame({"a": range(0, 130)}), pd.DataFrame({"a": range(130, 200)})]
    out = pd.concat(list(_slices(iter(frames), 50)))
    assert out["a"].tolist() == list(range(200))


def test_time_and_event_delays_both_hold() -> None:
    q = LabelQueue(delay_s=3600, delay_events=0)
    q.add(np.array(["a"]), np.array([1]), 0)
    assert list(q.due(sent=10)) == []  # enough events, not enough time
    assert q.next_wait() > 3000
