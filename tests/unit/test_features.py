"""Feature parity: streaming with carried state == batch featurisation (training/serving skew guard)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rtml.features.featurise import EVENT_MS, add_entity_aggregates, featurise_history
from rtml.infra.config.spec import load_spec, parse_duration_seconds
from rtml.pipelines.generator import CardTransactionGenerator


def _events(n: int = 20_000) -> pd.DataFrame:
    return CardTransactionGenerator(seed=2, n_cards=300).batch(n).rename(columns={"event_time_ms": EVENT_MS})


def test_streamed_aggregates_equal_batch_aggregates() -> None:
    spec = load_spec()
    events = _events()
    full = featurise_history(events, spec)
    history, parts = None, []
    for i in range(0, len(events), 1700):
        chunk, history = add_entity_aggregates(events.iloc[i : i + 1700].copy(), spec, history)
        parts.append(chunk)
    streamed = pd.concat(parts)
    for name in spec.aggregate_names:
        assert np.allclose(streamed[name].to_numpy(), full[name].to_numpy(), atol=1e-6), name
    newest = events[EVENT_MS].max()
    longest = max(parse_duration_seconds(w) for w in spec.aggregates.windows) * 1000
    assert history[EVENT_MS].min() > newest - longest  # state is pruned to the longest window


def test_counts_match_pandas_rolling_reference() -> None:
    spec = load_spec()
    events = _events(5_000)
    full = featurise_history(events, spec)
    for w in spec.aggregates.windows:
        sec = parse_duration_seconds(w)
        ts = pd.to_datetime(events[EVENT_MS], unit="ms")
        ref = events.assign(_one=1.0).set_index(ts).groupby("card_id")["_one"].rolling(f"{sec}s").sum()
        order = events.assign(_i=np.arange(len(events))).sort_values(["card_id", EVENT_MS], kind="stable")[
            "_i"
        ]
        expected = np.empty(len(events))
        expected[order.to_numpy()] = ref.to_numpy()
        assert np.array_equal(full[f"card_id_count_{w}"].to_numpy(), expected)


def _backlog(n: int = 12_000, partitions: int = 2) -> pd.DataFrame:
    """A backlog as one state bucket sees it: hours of event time, one Kafka partition after another.

    Cards are keyed to partitions (as the producer keys by card), so per card the rows stay in time
    order, but a partition's late rows come before the next partition's early ones.
    """
    gen = CardTransactionGenerator(seed=5, n_cards=40, events_per_sim_second=0.1)  # ≈33 h of events
    events = gen.batch(n).rename(columns={"event_time_ms": EVENT_MS})
    part = events["card_id"].str[-2:].astype(int) % partitions
    return events.assign(_p=part).sort_values("_p", kind="stable").drop(columns="_p")


def _shortfall(streamed: pd.DataFrame, full: pd.DataFrame, names: list[str]) -> dict[str, float]:
    """Per aggregate, how much the streamed frame is short of the batch reference (beyond rounding)."""
    out = {}
    for n in names:
        short = full[n].to_numpy() - streamed[n].to_numpy()
        out[n] = round(float(short[short > 1e-6].sum()), 2)
    return out


def test_backlog_chunks_keep_each_cards_history() -> None:
    """Chunks of a backlog spanning many hours: each card keeps its own trailing window of history.

    A trim to the chunk's newest time minus the window (global, not per card) lost the older
    history of cards whose events are older than other cards' newest: their 24 h aggregates
    came out short.
    """
    spec = load_spec()
    events = _backlog()
    span_h = (events[EVENT_MS].max() - events[EVENT_MS].min()) / 3_600_000
    assert span_h > 30
    full = featurise_history(events, spec)
    history, parts = None, []
    for i in range(0, len(events), 1000):
        chunk, history = add_entity_aggregates(events.iloc[i : i + 1000].copy(), spec, history)
        parts.append(chunk)
    streamed = pd.concat(parts)
    assert _shortfall(streamed, full, spec.aggregate_names) == dict.fromkeys(spec.aggregate_names, 0)
    for name in spec.aggregate_names:
        assert np.allclose(streamed[name].to_numpy(), full[name].to_numpy(), atol=1e-6), name
    longest = max(parse_duration_seconds(w) for w in spec.aggregates.windows) * 1000
    newest = history.groupby("card_id")[EVENT_MS].transform("max")
    assert (history[EVENT_MS] > newest - longest).all()  # pruned per card to the longest window
    assert set(history["card_id"]) == set(events["card_id"])  # every card keeps its recent rows
