"""The keyed entity store in PostgreSQL (``scoring.state_store: postgres``), on a real server.

The store tests of ``tests/unit/test_entity_store.py`` run here unchanged on a PostgreSQL table
(exact aggregates, de-duplication, replays, a store ahead of the checkpoint, eviction, layout
conversion, keys with any character, a stray older write); the tests below add what only this store
has: several buckets in one table, and a task of another process reading what one committed.
"""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from rtml.features.featurise import EVENT_MS
from rtml.pipelines.entity_store_pg import PgTarget
from rtml.pipelines.keyed_state import open_store
from tests.unit import test_entity_store as unit

pytestmark = pytest.mark.integration

KEY = unit.KEY


@pytest.fixture
def root(pg_state_url: str) -> PgTarget:
    """A new table per test, as a new checkpoint would have."""
    return PgTarget(pg_state_url, f"rtml_entity_state_{uuid.uuid4().hex[:16]}")


test_aggregates_equal_the_reference_across_micro_batches = (
    unit.test_aggregates_equal_the_reference_across_micro_batches
)
test_duplicates_are_neither_scored_nor_counted = unit.test_duplicates_are_neither_scored_nor_counted
test_a_replayed_micro_batch_computes_the_same_aggregates = (
    unit.test_a_replayed_micro_batch_computes_the_same_aggregates
)
test_a_store_ahead_of_the_checkpoint_is_an_error = unit.test_a_store_ahead_of_the_checkpoint_is_an_error
test_idle_entities_leave_and_active_ones_stay_exact = unit.test_idle_entities_leave_and_active_ones_stay_exact
test_entities_without_history_and_rows_in_event_order = (
    unit.test_entities_without_history_and_rows_in_event_order
)
test_switching_de_duplication_converts_the_rows_once = (
    unit.test_switching_de_duplication_converts_the_rows_once
)
test_another_sum_column_is_an_error = unit.test_another_sum_column_is_an_error
test_keys_with_any_character_and_many_keys = unit.test_keys_with_any_character_and_many_keys
test_a_write_from_an_older_micro_batch_is_refused = unit.test_a_write_from_an_older_micro_batch_is_refused


def test_buckets_share_a_table_and_keep_apart(root: PgTarget) -> None:
    rows = pd.DataFrame({KEY: ["a", "b"], EVENT_MS: [1, 2]})
    stores = [open_store(root, b, KEY, None, with_ids=False) for b in (0, 1)]
    try:
        stores[0].write(rows, 0)
        stores[1].write(rows.assign(**{EVENT_MS: [10, 20]}), 0)
        stores[1].write(rows.iloc[:1].assign(**{EVENT_MS: 30}), 1)  # bucket 1's "a" only moves on
        got = [s.read(rows[KEY], 2).sort_values(KEY)[EVENT_MS].tolist() for s in stores]
        assert got == [[1, 2], [30, 20]]
        assert stores[0].evict_idle(5, 2) == 0  # bucket 0's own newest event decides, not bucket 1's
    finally:
        for s in stores:
            s.close()


def test_another_connection_reads_what_a_write_committed(root: PgTarget) -> None:
    keys = np.array([f"card-{i}" for i in range(5_000)], dtype=object)
    writer = open_store(root, 3, KEY, "amount", with_ids=False)
    writer.write(pd.DataFrame({KEY: keys, EVENT_MS: np.arange(5_000), "amount": np.ones(5_000)}), 0)
    writer.close()
    reader = open_store(root, 3, KEY, "amount", with_ids=False)  # as the next micro-batch's task
    try:
        got = reader.read(pd.Series(keys[::7]), 1)
        assert len(got) == len(keys[::7]) and got[EVENT_MS].tolist() == list(range(0, 5_000, 7))
    finally:
        reader.close()
