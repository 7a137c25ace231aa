"""The keyed entity store without Spark: exact aggregates, de-duplication, replays, eviction.

The store tests take the store's ``root`` from a fixture: here the SQLite files under a temporary
directory; ``tests/integration/test_entity_store_postgres.py`` runs the same tests on a PostgreSQL table.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rtml.features.featurise import EVENT_MS, featurise_history
from rtml.infra.config.spec import load_spec
from rtml.pipelines.entity_state import DUPLICATE
from rtml.pipelines.entity_store import StoreAheadError, StoreMismatchError
from rtml.pipelines.entity_store_pg import PgTarget
from rtml.pipelines.generator import CardTransactionGenerator
from rtml.pipelines.keyed_state import (
    check_store,
    keyed_root,
    make_keyed_fn,
    open_store,
    resolve_buckets,
    store_mode,
)

SPEC = load_spec()
ID, KEY = SPEC.event_id, SPEC.entity_key


@pytest.fixture
def root(tmp_path: Path) -> Path | PgTarget:
    """Where the store under test keeps its rows: SQLite files under a temporary directory."""
    return tmp_path


def _entities(root: Path | PgTarget) -> list[str]:
    """The entities the store of bucket 0 keeps."""
    if isinstance(root, PgTarget):
        import psycopg
        from psycopg import sql

        with psycopg.connect(root.url) as con:
            query = sql.SQL("SELECT entity FROM {} WHERE bucket = 0").format(sql.Identifier(root.table))
            return [bytes(r[0]).decode() for r in con.execute(query)]
    with sqlite3.connect(root / "bucket-0000.sqlite") as con:
        return [r[0].decode() for r in con.execute("SELECT entity FROM entities")]


def _events(n: int, seed: int = 3, cards: int = 30) -> pd.DataFrame:
    gen = CardTransactionGenerator(seed=seed, n_cards=cards, events_per_sim_second=0.2)
    return gen.batch(n).rename(columns={"event_time_ms": EVENT_MS}).assign(_reason=None)


def _split(frame: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    edges = np.linspace(0, len(frame), n + 1).astype(int)
    return [frame.iloc[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _run(
    root: Path | PgTarget, batches: list[pd.DataFrame], horizon_s: int = 86_400, first: int = 0, **kw
) -> pd.DataFrame:  # noqa: E501
    """Micro-batches ``first``, ``first + 1``, ... through the keyed function of bucket 0."""
    out = []
    for i, batch in enumerate(batches):
        fn = make_keyed_fn(SPEC, None, lambda f: f, root, first + i, horizon_s, **kw)
        out.append(fn((0,), batch.copy()))
    return pd.concat(out, ignore_index=True)


def _check_exact(out: pd.DataFrame, events: pd.DataFrame) -> None:
    ref = featurise_history(events.drop(columns="_reason"), SPEC).set_index(ID)
    kept = out[out["_reason"].isna()]
    assert kept[ID].is_unique and len(kept) == len(events)
    got = kept.set_index(ID).loc[ref.index]
    for name in SPEC.aggregate_names:
        assert np.allclose(got[name].to_numpy(), ref[name].to_numpy(), atol=1e-6), name


def test_aggregates_equal_the_reference_across_micro_batches(root: Path | PgTarget) -> None:
    events = _events(6000)
    _check_exact(_run(root, _split(events, 7)), events)


def test_duplicates_are_neither_scored_nor_counted(root: Path | PgTarget) -> None:
    events = _events(4000)
    rng = np.random.default_rng(1)
    picks = np.sort(rng.choice(len(events), 300, replace=False))
    later = events.iloc[picks].copy()
    fed = [events.iloc[:2000], pd.concat([events.iloc[2000:], later.iloc[:5], later.iloc[:5]]), later]
    out = _run(root, fed)
    dup = out["_reason"] == DUPLICATE
    assert int(dup.sum()) == 310  # copies in the same batch and in later ones
    assert out.loc[dup, SPEC.aggregate_names].isna().all().all()
    _check_exact(out, events)


def test_a_replayed_micro_batch_computes_the_same_aggregates(root: Path | PgTarget) -> None:
    events = _events(3000)
    parts = _split(events, 3)
    _run(root, parts[:2])
    once = _run(root, [parts[2]], first=2)
    again = _run(root, [parts[2]], first=2)  # Spark re-runs the uncommitted batch: same events
    pd.testing.assert_frame_equal(once, again)
    assert (once["_reason"].isna()).all()  # the replay did not see its own first run's ids
    nxt = _run(root, [events.iloc[:10]], first=3)  # the next batch sees batch 2's ids
    assert (nxt["_reason"] == DUPLICATE).all()


def test_a_store_ahead_of_the_checkpoint_is_an_error(root: Path | PgTarget) -> None:
    events = _events(200)
    _run(root, [events], first=5)
    with pytest.raises(StoreAheadError, match="micro-batch 5 but the checkpoint is at 3"):
        _run(root, [events], first=3)


def test_idle_entities_leave_and_active_ones_stay_exact(root: Path | PgTarget) -> None:
    events = _events(3000)
    late = events[EVENT_MS].max() + 10 * 86_400_000  # ten days later, one card comes back
    back = events.iloc[[0]].assign(**{EVENT_MS: late, ID: "back-1"})
    _run(root, [events], idle_ttl_s=7 * 86_400)
    again = back.assign(**{ID: "back-2", EVENT_MS: late + 1})
    out = _run(root, [back, again], first=1, idle_ttl_s=7 * 86_400)
    assert _entities(root) == [
        back[KEY].iloc[0]
    ]  # the others, idle > 7 days, were evicted by the second batch
    assert out["card_id_count_24h"].tolist() == [1.0, 2.0]


def test_entities_without_history_and_rows_in_event_order(root: Path | PgTarget) -> None:
    store = open_store(root, 1, KEY, "amount", with_ids=True)
    assert store.read(pd.Series(["nobody"]), 0).empty
    rows = pd.DataFrame(
        {
            KEY: ["b", "a", "b"],
            EVENT_MS: [5, 1, 7],
            "amount": [np.nan, 2.0, 3.0],
            "_id_hash": np.array([1, 2, 3], dtype=np.uint64),
        }  # noqa: E501
    )
    store.write(rows, 0)
    got = store.read(pd.Series(["b", "a"]), 1).sort_values([KEY, EVENT_MS]).reset_index(drop=True)
    assert got[KEY].tolist() == ["a", "b", "b"] and got[EVENT_MS].tolist() == [1, 5, 7]
    assert np.isnan(got["amount"].iloc[1]) and got["_id_hash"].tolist() == [2, 1, 3]
    store.close()


def test_switching_de_duplication_converts_the_rows_once(root: Path | PgTarget) -> None:
    events = _events(3000)
    parts = _split(events, 3)
    out = [_run(root, parts[:1], horizon_s=0)]  # 16-byte records: no ids
    out.append(_run(root, parts[1:2], horizon_s=86_400, first=1))  # ids from here on
    out.append(_run(root, [parts[2], parts[2].iloc[:7]], horizon_s=0, first=2))  # off again
    _check_exact(pd.concat(out[:2] + [out[2].iloc[: len(parts[2])]]), events)
    assert out[2]["_reason"].isna().all()  # de-duplication off: the copies count (as before)


def test_another_sum_column_is_an_error(root: Path | PgTarget) -> None:
    open_store(root, 0, KEY, "amount", with_ids=True).write(
        pd.DataFrame(
            {KEY: ["a"], EVENT_MS: [1], "amount": [1.0], "_id_hash": np.array([5], dtype=np.uint64)}
        ),
        0,
    )
    with pytest.raises(StoreMismatchError, match="was written for the columns"):
        open_store(root, 0, KEY, "fee", with_ids=True).read(pd.Series(["a"]), 1)


def test_keys_with_any_character_and_many_keys(root: Path | PgTarget) -> None:
    store = open_store(root, 0, KEY, None, with_ids=False)
    keys = ["a\x00b", "é'\"", "a", *(f"k{i}" for i in range(70_000))]  # more than one query's keys
    for i, k in enumerate(keys[:3]):  # one at a time: pandas' own hashing stops at a NUL character
        store.write(pd.DataFrame({KEY: [k], EVENT_MS: [i]}), 0)
    store.write(pd.DataFrame({KEY: keys[3:], EVENT_MS: np.arange(3, len(keys))}), 0)
    got = pd.concat([store.read(pd.Series([k]), 1) for k in keys[:3]] + [store.read(pd.Series(keys[3:]), 1)])
    assert got[KEY].tolist()[:3] == keys[:3] and got[EVENT_MS].tolist()[:3] == [0, 1, 2]
    assert sorted(got[KEY]) == sorted(keys)


def test_a_write_from_an_older_micro_batch_is_refused(root: Path | PgTarget) -> None:
    store = open_store(root, 0, KEY, None, with_ids=False)
    rows = pd.DataFrame({KEY: ["a", "b"], EVENT_MS: [1, 2]})
    store.write(rows, 5)
    store.write(rows.iloc[:1].assign(**{EVENT_MS: 3}), 6)
    with pytest.raises(StoreAheadError, match="1 entities were written by a later micro-batch than 5"):
        store.write(rows, 5)  # a stray attempt of batch 5, after batch 6 wrote a
    assert store.read(pd.Series(["a", "b"]), 7).sort_values(KEY)[EVENT_MS].tolist() == [3, 2]  # unchanged


def test_the_store_a_checkpoint_uses(tmp_path: Path) -> None:
    assert store_mode("auto", "local[2]", tmp_path) == "sqlite"
    (tmp_path / "state").mkdir()  # a checkpoint that keeps its state in Spark's store keeps it
    assert store_mode("auto", "local[2]", tmp_path) == "spark"
    assert store_mode("auto", "local-cluster[2,1,1024]") == "spark"
    with pytest.raises(StoreMismatchError, match="needs a local master"):
        store_mode("sqlite", "spark://127.0.0.1:7077")
    with pytest.raises(StoreMismatchError, match="keeps entity state in Spark's store"):
        keyed_root(tmp_path)
    with pytest.raises(StoreMismatchError, match="state_store: spark, or start a new checkpoint"):
        check_store(tmp_path, "postgres")
    (tmp_path / "state").rmdir()
    (tmp_path / "entity_state").mkdir()
    with pytest.raises(StoreMismatchError, match="keeps entity state in .*entity_state: set"):
        check_store(tmp_path, "spark")
    with pytest.raises(StoreMismatchError, match="use a local master, or start a new checkpoint"):
        store_mode("auto", "spark://h:7077", tmp_path, url=True)  # the checkpoint's sqlite store


def test_a_postgres_checkpoint_keeps_its_store(tmp_path: Path) -> None:
    assert store_mode("auto", "spark://h:7077", tmp_path, url=True) == "postgres"
    with pytest.raises(StoreMismatchError, match="postgres \\(set\\) needs scoring.state_url"):
        store_mode("postgres", "local[2]")
    (tmp_path / "entity_state_postgres").write_text("rtml_entity_state_x\n")  # what pg_target records
    assert store_mode("auto", "local[2]", tmp_path, url=True) == "postgres"  # a checkpoint keeps its store
    with pytest.raises(StoreMismatchError, match="keeps its entity state in that store.*state_url"):
        store_mode("auto", "local[2]", tmp_path)
    with pytest.raises(StoreMismatchError, match=r"keeps entity state in PostgreSQL .*state_store: postgres"):
        keyed_root(tmp_path)


def test_a_checkpoint_keeps_its_number_of_buckets(tmp_path: Path) -> None:
    cp = tmp_path / "cp"
    assert resolve_buckets(cp, None, "sqlite") == 1  # recorded on first start: the store's default
    assert resolve_buckets(cp, None, "spark") == 1  # later starts keep it when the setting is unset
    assert resolve_buckets(cp, 1, "sqlite") == 1
    with pytest.raises(StoreMismatchError, match="entity_buckets is 2 but the checkpoint .* with 1"):
        resolve_buckets(cp, 2, "sqlite")
    assert resolve_buckets(tmp_path / "old", None, "spark") == 8  # a checkpoint of Spark's store: 8
    assert resolve_buckets(tmp_path / "set", 4, "sqlite") == 4


def test_a_query_runs_on_the_shuffle_partitions_its_checkpoint_recorded(tmp_path: Path) -> None:
    """Bucket labels are chosen for the partitions Spark will use: the offset log's, else the session's."""
    import json

    from rtml.pipelines.keyed_state import query_partitions

    cp = tmp_path / "cp"
    assert query_partitions(cp, 2) == 2  # a new checkpoint: the session's
    (cp / "offsets").mkdir(parents=True)
    meta = {"batchWatermarkMs": 0, "batchTimestampMs": 1, "conf": {"spark.sql.shuffle.partitions": "3"}}
    (cp / "offsets" / "0").write_text(f"v1\n{json.dumps(meta)}\n{{}}\n")
    (cp / "offsets" / "1").write_text("v1\n")  # a torn newest entry: the one before decides
    (cp / "offsets" / ".1.tmp").write_text("junk")
    assert query_partitions(cp, 2) == 3
