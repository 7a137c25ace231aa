"""The keyed entity store in PostgreSQL (``scoring.state_store: postgres``), on a real server.

The store tests of ``tests/unit/test_entity_store.py`` run here unchanged on a PostgreSQL table
(exact aggregates, de-duplication, replays, a store ahead of the checkpoint, eviction, layout
conversion, keys with any character, a stray older write); the tests below add what only this store
has: several buckets in one table, and a task of another process reading what one committed.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg import sql

from rtml.features.featurise import EVENT_MS
from rtml.pipelines.entity_store import StoreMismatchError
from rtml.pipelines.entity_store_pg import PgTarget, StateUrlError, create_table
from rtml.pipelines.keyed_state import open_store, pg_target
from tests.helpers import free_port
from tests.unit import test_entity_store as unit

pytestmark = pytest.mark.integration

KEY = unit.KEY


@pytest.fixture
def root(pg_state_url: str) -> PgTarget:
    """A new table per test, as a new checkpoint would have."""
    target = PgTarget(pg_state_url, f"rtml_entity_state_{uuid.uuid4().hex[:16]}")
    create_table(target)  # as the driver does when a checkpoint first names it
    return target


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
        assert sorted(got[EVENT_MS].tolist()) == list(range(0, 5_000, 7))  # each card's one row
    finally:
        reader.close()


def test_a_checkpoint_names_its_table_once_and_misses_it_loudly(pg_state_url: str, tmp_path: Path) -> None:
    first = pg_target(tmp_path, pg_state_url)  # the first start: the table, then the checkpoint's record
    assert first.table.startswith("rtml_entity_state_") and "postgres:" not in repr(first)
    assert (tmp_path / "entity_state_postgres").read_text().strip() == first.table
    assert pg_target(tmp_path, pg_state_url) == first  # later starts keep it
    written = open_store(first, 0, KEY, None, with_ids=False)  # the first micro-batch records its layout
    written.write(pd.DataFrame({KEY: ["a"], EVENT_MS: [1]}), 0)
    written.close()
    with psycopg.connect(pg_state_url, autocommit=True) as con:  # the server's data lost, or another one
        con.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(first.table)))
    with pytest.raises(StoreMismatchError, match="does not have .* restore both or start both afresh"):
        pg_target(tmp_path, pg_state_url)
    store = open_store(first, 0, KEY, None, with_ids=False)  # an executor of a job already running
    with pytest.raises(StoreMismatchError, match="the table is not in the database"):
        store.read(pd.Series(["a"]), 0)
    store.close()


def test_a_bad_url_is_one_line_without_its_password_and_pins_nothing(
    pg_state_url: str, tmp_path: Path
) -> None:
    password = pg_state_url.split(":")[2].split("@")[0]
    wrong_port = pg_state_url.replace(pg_state_url.rsplit(":", 1)[1].split("/")[0], str(free_port()))
    for url, match in [
        (pg_state_url.removeprefix("postgresql://"), "must be a postgresql:// URL"),
        (pg_state_url.replace(password, password + "%zz"), "not a valid URL"),
        (pg_state_url.replace(password, password + "@x"), "not a valid URL"),  # an unencoded @
        (pg_state_url.replace(password, password + "/x"), "not a valid URL"),  # an unencoded /
        (wrong_port, "entity state store at scoring.state_url: .*"),
        (pg_state_url.replace(password, "wrong"), "password authentication failed"),
    ]:
        with pytest.raises(StateUrlError, match=match) as err:
            pg_target(tmp_path, url)
        assert password not in str(err.value) and "\n" not in str(err.value)
        assert not (tmp_path / "entity_state_postgres").exists()  # a failed first start pins no store
