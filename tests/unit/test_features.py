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
