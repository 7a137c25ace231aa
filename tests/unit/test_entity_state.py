"""The state function of the scoring job without Spark: de-duplication and exact aggregates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rtml.features.featurise import EVENT_MS, featurise_history
from rtml.infra.config.spec import load_spec
from rtml.pipelines.entity_state import DUPLICATE, _from_bytes, _to_bytes, make_state_fn, repeated
from rtml.pipelines.generator import CardTransactionGenerator

SPEC = load_spec()
ID = SPEC.event_id


class _State:
    """GroupState stand-in: the bytes the state function stores between micro-batches."""

    def __init__(self, blob: bytes | None = None) -> None:
        self.blob = blob

    @property
    def exists(self) -> bool:
        return self.blob is not None

    @property
    def get(self) -> tuple[bytes]:
        assert self.blob is not None
        return (self.blob,)

    def update(self, value: tuple[bytes]) -> None:
        self.blob = value[0]


def _events(n: int, seed: int = 3) -> pd.DataFrame:
    gen = CardTransactionGenerator(seed=seed, n_cards=30, events_per_sim_second=0.2)  # ≈ n/720 h
    return gen.batch(n).rename(columns={"event_time_ms": EVENT_MS}).assign(_reason=None)


def _run(batches: list[pd.DataFrame], horizon_s: int, chunk: int = 500, state: _State | None = None):  # noqa: ANN202
    """Feed micro-batches (each in chunks) through the state function; all output rows."""
    fn = make_state_fn(SPEC, None, lambda f: f, horizon_s)
    state = state or _State()
    out = []
    for batch in batches:
        frames = (batch.iloc[i : i + chunk].copy() for i in range(0, len(batch), chunk))
        out += list(fn((0,), frames, state))
    return pd.concat(out, ignore_index=True), state


def _with_copies(events: pd.DataFrame, rate: float, seed: int) -> tuple[pd.DataFrame, int]:
    """Events with some re-sent (a copy right after, or a few hundred events later)."""
    rng = np.random.default_rng(seed)
    picks = np.flatnonzero(rng.random(len(events)) < rate)
    copies = events.iloc[picks]
    where = np.minimum(picks + rng.integers(0, 400, len(picks)), len(events) - 1) + 0.5
    both = pd.concat([events, copies], ignore_index=True)
    pos = np.concatenate([np.arange(len(events), dtype=float), where])
    return both.iloc[np.argsort(pos, kind="stable")].reset_index(drop=True), len(picks)


def test_duplicates_are_neither_scored_nor_counted() -> None:
    events = _events(6000)
    fed, n_copies = _with_copies(events, 0.08, seed=1)
    assert n_copies > 300
    half = len(fed) // 2
    out, _ = _run([fed.iloc[:half], fed.iloc[half:]], horizon_s=86_400)
    dup = out["_reason"] == DUPLICATE
    assert int(dup.sum()) == n_copies  # every copy found, across chunks and micro-batches
    kept = out[~dup]
    assert kept[ID].is_unique and len(kept) == len(events)
    assert out.loc[dup, SPEC.aggregate_names].isna().all().all()  # duplicates carry no features
    ref = featurise_history(events.drop(columns="_reason"), SPEC).set_index(ID)
    got = kept.set_index(ID).loc[ref.index]
    for name in SPEC.aggregate_names:
        assert np.allclose(got[name].to_numpy(), ref[name].to_numpy(), atol=1e-6), name


def test_without_de_duplication_copies_count_twice() -> None:
    events = _events(2000)
    fed, n_copies = _with_copies(events, 0.1, seed=2)
    out, _ = _run([fed], horizon_s=0)
    assert out["_reason"].isna().all() and len(out) == len(events) + n_copies
    ref = featurise_history(events.drop(columns="_reason"), SPEC)
    assert out["card_id_count_24h"].sum() > ref["card_id_count_24h"].sum()


def test_repeated_ids_only_within_the_horizon_of_the_entitys_newest_event() -> None:
    seen = pd.DataFrame(
        {"card_id": ["a", "a", "b"], EVENT_MS: [0, 120_000, 0], ID: ["old-a", "new-a", "old-b"]}
    )
    new = pd.DataFrame({ID: ["old-a", "new-a", "old-b", "x", "x", None, None]})
    # a's newest is 120 s: with a 60 s horizon its id at 0 s is forgotten; b's newest is its only one
    assert repeated(new, seen, SPEC, 60_000).tolist() == [False, True, True, False, True, False, False]


def test_state_written_before_de_duplication_still_reads() -> None:
    events = _events(1500)
    first, state = _run([events.iloc[:1000]], horizon_s=0)
    assert ID not in _from_bytes(state.blob).columns  # ids are only kept when de-duplicating
    again = pd.concat([events.iloc[1000:], events.iloc[1000:1010]])
    out, state = _run([again], horizon_s=86_400, state=state)
    assert int((out["_reason"] == DUPLICATE).sum()) == 10
    ref = featurise_history(events.drop(columns="_reason"), SPEC).iloc[1000:]
    kept = out[out["_reason"].isna()]
    assert np.allclose(kept["card_id_count_24h"].to_numpy(), ref["card_id_count_24h"].to_numpy())
    assert ID in _from_bytes(state.blob).columns
    assert _from_bytes(_to_bytes(_from_bytes(state.blob))).equals(_from_bytes(state.blob))


def test_a_chunk_of_only_duplicates() -> None:
    events = _events(200)
    out, _ = _run([events, events.iloc[:50]], horizon_s=86_400, chunk=50)
    assert int((out["_reason"] == DUPLICATE).sum()) == 50 and out[ID].nunique() == 200


def test_idle_entities_leave_state_and_active_ones_stay_exact() -> None:
    events = _events(3000)
    late = events[EVENT_MS].max() + 10 * 86_400_000  # ten days later, one card comes back
    back = events.iloc[[0]].assign(**{EVENT_MS: late, ID: "back-1"})
    fn = make_state_fn(SPEC, None, lambda f: f, 86_400, idle_ttl_s=7 * 86_400)
    state = _State()
    list(fn((0,), iter([events.copy()]), state))
    assert _from_bytes(state.blob)[SPEC.entity_key].nunique() == events[SPEC.entity_key].nunique()
    out = list(fn((0,), iter([back.copy()]), state))[0]
    kept = _from_bytes(state.blob)
    assert kept[SPEC.entity_key].unique().tolist() == [back[SPEC.entity_key].iloc[0]]  # the rest idle > 7 d
    assert out[[a for a in SPEC.aggregate_names if "count" in a]].iloc[0].tolist() == [1.0] * sum(
        "count" in a for a in SPEC.aggregate_names
    )  # its own window holds only itself: eviction changed no aggregate


def test_untouched_entities_keep_their_rows_and_touched_ones_are_exact() -> None:
    """Only the entities of a batch are converted and trimmed; the others' rows go back unchanged."""
    events = _events(3000)
    first, later = events.iloc[:2990], events.iloc[2990:]  # 10 events: a few of the 30 cards
    _, state = _run([first], horizon_s=86_400)
    before = _from_bytes(state.blob)
    out, state = _run([later], horizon_s=86_400, state=state)
    after = _from_bytes(state.blob)
    key = SPEC.entity_key
    untouched = ~before[key].isin(later[key])
    cols = list(before.columns)
    rows = lambda f: f.sort_values(cols).reset_index(drop=True)  # noqa: E731
    assert untouched.any()
    pd.testing.assert_frame_equal(rows(before[untouched]), rows(after[~after[key].isin(later[key])]))
    ref = featurise_history(events.drop(columns="_reason"), SPEC).set_index(ID).loc[later[ID]]
    got = out.set_index(ID).loc[later[ID]]
    for name in SPEC.aggregate_names:
        assert np.allclose(got[name].to_numpy(), ref[name].to_numpy(), atol=1e-6), name


def test_state_written_without_compression_still_reads() -> None:
    events = _events(1500)
    _, state = _run([events.iloc[:1000]], horizon_s=86_400)
    plain = _State(_to_bytes(_from_bytes(state.blob)))  # uncompressed IPC, as state was written before
    out, plain = _run([events.iloc[1000:]], horizon_s=86_400, state=plain)
    ref = featurise_history(events.drop(columns="_reason"), SPEC).iloc[1000:]
    assert np.allclose(out["card_id_count_24h"].to_numpy(), ref["card_id_count_24h"].to_numpy())
    assert len(plain.blob) < len(_to_bytes(_from_bytes(plain.blob)))  # written back compressed
