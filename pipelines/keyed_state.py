"""The scoring job's per-entity state in a keyed store (``scoring.state_store``): which store a
query uses, and the query's ``applyInPandas`` function (one store per bucket: SQLite files
on a local master, a PostgreSQL table on any master).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from rtml.infra.config.files import replace_file
from rtml.infra.config.spec import StreamSpec
from rtml.pipelines.entity_state import featurise_once, idle_after_ms, pseudonymise, without_features
from rtml.pipelines.entity_store import ID_HASH, EntityStore, KeyedStore, StoreMismatchError, hash_ids
from rtml.pipelines.entity_store_pg import PgEntityStore, PgTarget, check_table, create_table
from rtml.pipelines.scorer import task_batch_id
from rtml.pipelines.spark_conf import is_one_jvm

KEYED_DIR = "entity_state"
PG_MARKER = "entity_state_postgres"  # the name of the checkpoint's PostgreSQL table


def kept_store(checkpoint: Path | None) -> str | None:
    """The store a checkpoint already keeps its entity state in (``None``: none yet)."""
    if checkpoint is None:
        return None
    marks = (("spark", "state"), ("sqlite", KEYED_DIR), ("postgres", PG_MARKER))
    return next((store for store, mark in marks if (checkpoint / mark).exists()), None)


def store_mode(setting: str, master: str, checkpoint: Path | None = None, url: bool = False) -> str:
    """``spark``, ``sqlite`` or ``postgres``. A checkpoint keeps the store it started with; else
    ``auto`` is sqlite on a local master, and elsewhere postgres when ``scoring.state_url`` is set
    (``url``), else Spark's store. sqlite on a master whose tasks may run on other hosts is an error
    (the files are on the driver's disk), and so is postgres without a URL.

    >>> store_mode("auto", "local[2]"), store_mode("auto", "spark://h:7077"), store_mode("spark", "local")
    ('sqlite', 'spark', 'spark')
    >>> store_mode("auto", "spark://h:7077", url=True)
    'postgres'
    """
    local = is_one_jvm(master)
    kept = kept_store(checkpoint)
    if checkpoint is not None and setting != "auto":
        check_store(checkpoint, setting)  # the checkpoint's store first: it decides
    store = kept or setting
    if store == "auto":
        store = "sqlite" if local else "postgres" if url else "spark"
    why = f"the checkpoint {checkpoint} keeps its entity state in that store" if kept else "set"
    if store == "sqlite" and not local:
        raise StoreMismatchError(
            f"scoring.state_store: sqlite ({why}) keeps entity state on the driver's disk and needs a "
            f"local master; this job's master is {master}: "
            + ("use a local master, or start a new checkpoint" if kept else "use postgres or spark")
        )
    if store == "postgres" and not url:
        raise StoreMismatchError(
            f"scoring.state_store: postgres ({why}) needs scoring.state_url: set it to the "
            "server's postgresql:// URL"
        )
    return store


def check_store(checkpoint: Path, store: str) -> None:
    """An error when the checkpoint keeps its entity state in another store than ``store``
    (switching would start every entity afresh)."""
    kept = kept_store(checkpoint)
    if kept is None or kept == store:
        return
    where = {
        "spark": "Spark's store",
        "sqlite": str(checkpoint / KEYED_DIR),
        "postgres": f"PostgreSQL ({checkpoint / PG_MARKER})",
    }[kept]
    raise StoreMismatchError(
        f"scoring.state_store is {store} but the checkpoint {checkpoint} keeps entity state in "
        f"{where}: set scoring.state_store: {kept}, or start a new checkpoint"
    )


# Spark's store moves a group's whole state per call: 8 groups keep each call's state small. The sqlite
# store reads only the batch's entities: one group is one file and one commit per micro-batch (at
# 2,000 events/s, 8 groups: p50/p99 1.56/2.60 s, 1 group: 0.98/1.57 s; README "Benchmarks"). The
# postgres store runs on clusters: 4 groups let up to 4 tasks share a micro-batch's state work.
DEFAULT_BUCKETS = {"spark": 8, "sqlite": 1, "postgres": 4}


def spark_partition(label: int, partitions: int) -> int:
    """The shuffle partition Spark's hash partitioning gives an ``int`` grouping key: Murmur3
    (``Murmur3_x86_32.hashInt``, seed 42) of the value, modulo ``partitions`` (``pmod``).

    >>> [spark_partition(b, 2) for b in range(4)], [spark_partition(b, 4) for b in range(4)]
    ([1, 1, 0, 1], [3, 3, 2, 3])
    """
    m = 0xFFFFFFFF

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & m

    k = rotl((label & m) * 0xCC9E2D51 & m, 15) * 0x1B873593 & m
    h = (rotl(42 ^ k, 13) * 5 + 0xE6546B64) & m
    h ^= 4
    h = (h ^ (h >> 16)) * 0x85EBCA6B & m
    h = (h ^ (h >> 13)) * 0xC2B2AE35 & m
    h ^= h >> 16
    signed = h - (1 << 32) if h & 0x80000000 else h
    return signed % partitions  # Python's % is Spark's pmod for a positive divisor


def bucket_labels(buckets: int, partitions: int) -> list[int]:
    """Grouping-key values for buckets ``0 .. buckets-1`` that Spark's hash partitioning spreads
    evenly: bucket ``i`` lands on shuffle partition ``i % partitions``. The bucket numbers themselves
    do not spread (4 buckets over 4 partitions: 3 of them in one task, see :func:`spark_partition`).
    The stores keep the bucket number; only the key Spark groups by is the label.

    >>> bucket_labels(1, 1), bucket_labels(4, 4), bucket_labels(3, 2)
    ([0], [12, 6, 2, 0], [2, 0, 4])
    """
    # each label, in increasing order, goes to the next bucket still waiting on its partition: the
    # k-th bucket of partition p is p + k * partitions
    labels, taken, label, done = [0] * buckets, [0] * partitions, 0, 0
    while done < buckets:
        p = spark_partition(label, partitions)
        i = p + taken[p] * partitions
        if i < buckets:
            labels[i], taken[p], done = label, taken[p] + 1, done + 1
        label += 1
    return labels


def query_partitions(checkpoint: Path, session: int) -> int:
    """The shuffle partitions a streaming query runs on: the number its checkpoint recorded in the
    offset log (Spark keeps it whatever the session says), else the session's (a new checkpoint)."""
    logs = checkpoint / "offsets"
    batches = (
        sorted((int(p.name) for p in logs.iterdir() if p.name.isdigit()), reverse=True)
        if logs.is_dir()
        else []
    )
    for n in batches:  # the newest readable entry: line 2 is the batch's metadata with its conf
        try:
            meta = json.loads((logs / str(n)).read_text().splitlines()[1])
            return int(meta["conf"]["spark.sql.shuffle.partitions"])
        except (OSError, IndexError, KeyError, TypeError, ValueError):
            continue
    return session


def resolve_buckets(checkpoint: Path, setting: int | None, store: str) -> int:
    """The checkpoint's number of entity buckets (an entity's bucket is its key's hash modulo it).

    The first start records it (``setting``, else the store's default); later starts keep the
    recorded number, and a ``setting`` that differs from it is an error: every entity's history
    would be in another bucket. Call it after the store checks, so a refused start records nothing.
    """
    marker = checkpoint / "entity_buckets"
    if marker.exists():
        before = int(marker.read_text().strip())
        if setting is not None and setting != before:
            raise StoreMismatchError(
                f"spark.entity_buckets is {setting} but the checkpoint {checkpoint} was started with "
                f"{before}: every entity would lose its history; set it back to {before} (or unset it) "
                "or start a new checkpoint"
            )
        return before
    buckets = setting or DEFAULT_BUCKETS[store]
    replace_file(marker, f"{buckets}\n")
    return buckets


def keyed_root(checkpoint: Path) -> Path:
    """Where the ``sqlite`` store of this query's checkpoint lives (after :func:`check_store`)."""
    check_store(checkpoint, "sqlite")
    return checkpoint / KEYED_DIR


def pg_target(checkpoint: Path, url: str) -> PgTarget:
    """The ``postgres`` store of this query's checkpoint: the table named in the checkpoint, or a
    new table's name recorded there on the first start (after :func:`check_store`)."""
    check_store(checkpoint, "postgres")
    marker = checkpoint / PG_MARKER
    if marker.exists():
        target = PgTarget(url, marker.read_text().strip())
        check_table(target, checkpoint)  # its state is still there
        return target
    target = PgTarget(url, f"rtml_entity_state_{uuid.uuid4().hex[:16]}")
    create_table(target)  # before the checkpoint names it: a failed start pins no store
    replace_file(marker, f"{target.table}\n")
    return target


def open_store(
    root: str | Path | PgTarget, bucket: int, key: str, sum_of: str | None, with_ids: bool
) -> KeyedStore:
    """The keyed store of one bucket: SQLite files under ``root``, or the PostgreSQL table."""
    if isinstance(root, PgTarget):
        return PgEntityStore(root, bucket, key, sum_of, with_ids)
    return EntityStore(root, bucket, key, sum_of, with_ids)


def make_keyed_fn(
    spec: StreamSpec,
    pseudonym_key: str | None,
    finish: Callable[[pd.DataFrame], pd.DataFrame],
    root: str | Path | PgTarget,
    batch_id: int | None = None,
    dedup_horizon_s: int = 0,
    idle_ttl_s: int = 0,
    labels: list[int] | None = None,
) -> Callable[[tuple, pd.DataFrame], pd.DataFrame]:
    """The ``groupBy('_bucket').applyInPandas`` function of the scoring query: the same features,
    de-duplication and scores as :func:`rtml.pipelines.entity_state.make_state_fn`, with the state of
    the bucket's touched entities read from and written to its keyed store (:func:`open_store`) under
    the micro-batch's id (``batch_id``, else the running task's: :func:`task_batch_id`), which makes a
    replayed batch change nothing. The group key is the bucket's label in ``labels``
    (:func:`bucket_labels`; ``None``: the bucket number itself). Built once, in the streaming plan.
    """
    horizon_ms = dedup_horizon_s * 1000
    carry = (ID_HASH,) if horizon_ms else ()
    idle_ms = idle_after_ms(spec, idle_ttl_s, horizon_ms)
    sum_of = spec.aggregates.sum_of if spec.aggregates else None
    bucket_of = {label: i for i, label in enumerate(labels)} if labels is not None else None

    def fn(key: tuple, frame: pd.DataFrame) -> pd.DataFrame:
        bucket = int(key[0])
        if bucket >= 0 and bucket_of is not None:
            bucket = bucket_of[bucket]
        if bucket < 0:  # invalid events: pass through untouched
            return finish(without_features(frame, spec))
        if pseudonym_key:
            frame[spec.entity_key] = pseudonymise(frame[spec.entity_key], pseudonym_key)
        batch = task_batch_id() if batch_id is None else batch_id
        store = open_store(root, bucket, spec.entity_key, sum_of, with_ids=bool(horizon_ms))
        try:
            history = store.read(frame[spec.entity_key], batch)
            if horizon_ms:
                frame[ID_HASH] = hash_ids(frame[spec.event_id])
            frame, history = featurise_once(frame, history, spec, carry, horizon_ms, ID_HASH)
            store.write(history, batch)
            store.evict_idle(idle_ms, batch)
        finally:
            store.close()
        return finish(frame.drop(columns=ID_HASH, errors="ignore"))

    return fn
