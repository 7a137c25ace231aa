"""The scoring job's per-entity state in the keyed store (``scoring.state_store``): which store a
query uses, and the ``applyInPandas`` function of one micro-batch (:class:`EntityStore` per bucket).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from rtml.infra.config.files import replace_file
from rtml.infra.config.spec import StreamSpec
from rtml.pipelines.entity_state import featurise_once, idle_after_ms, pseudonymise, without_features
from rtml.pipelines.entity_store import ID_HASH, EntityStore, StoreMismatchError, hash_ids

KEYED_DIR = "entity_state"


def store_mode(setting: str, master: str, checkpoint: Path | None = None) -> str:
    """``spark`` or ``sqlite``: ``auto`` is sqlite on a local master, Spark's store elsewhere or when
    the ``checkpoint`` already keeps its state there (a checkpoint keeps its store); sqlite on a master
    whose tasks may run on other hosts is an error (the files are on the driver's disk).

    >>> store_mode("auto", "local[2]"), store_mode("auto", "spark://h:7077"), store_mode("spark", "local")
    ('sqlite', 'spark', 'spark')
    """
    local = master == "local" or master.startswith("local[")
    if setting == "auto":
        spark_state = checkpoint is not None and (checkpoint / "state").exists()
        return "sqlite" if local and not spark_state else "spark"
    if setting == "sqlite" and not local:
        raise StoreMismatchError(
            f"scoring.state_store: sqlite keeps entity state on the driver's disk and needs a local "
            f"master; this job's master is {master}: use spark (or auto)"
        )
    return setting


# Spark's store moves a group's whole state per call: 8 groups keep each call's state small. The sqlite
# store reads only the batch's entities: one group is one file and one commit per micro-batch (at
# 2,000 events/s, 8 groups: p50/p99 1.56/2.60 s, 1 group: 0.98/1.57 s; README "Benchmarks")
DEFAULT_BUCKETS = {"spark": 8, "sqlite": 1}


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
    """Where the ``sqlite`` store of this query's checkpoint lives; an error when the checkpoint
    already keeps its entity state in Spark's store (switching would start every entity afresh)."""
    if (checkpoint / "state").exists():
        raise StoreMismatchError(
            f"scoring.state_store is sqlite but the checkpoint {checkpoint} keeps entity state in "
            "Spark's store: set scoring.state_store: spark, or start a new checkpoint"
        )
    return checkpoint / KEYED_DIR


def check_spark_store(checkpoint: Path) -> None:
    """An error when the checkpoint keeps its entity state in the ``sqlite`` store."""
    if (checkpoint / KEYED_DIR).exists():
        raise StoreMismatchError(
            f"scoring.state_store is spark but the checkpoint {checkpoint} keeps entity state in "
            f"{checkpoint / KEYED_DIR}: set scoring.state_store: sqlite, or start a new checkpoint"
        )


def make_keyed_fn(
    spec: StreamSpec,
    pseudonym_key: str | None,
    finish: Callable[[pd.DataFrame], pd.DataFrame],
    root: str | Path,
    batch_id: int,
    dedup_horizon_s: int = 0,
    idle_ttl_s: int = 0,
) -> Callable[[tuple, pd.DataFrame], pd.DataFrame]:
    """The function for micro-batch ``batch_id``'s ``groupBy('_bucket').applyInPandas``: the same
    features, de-duplication and scores as :func:`rtml.pipelines.entity_state.make_state_fn`, with
    the state of the bucket's touched entities read from and written to its :class:`EntityStore`.
    """
    horizon_ms = dedup_horizon_s * 1000
    carry = (ID_HASH,) if horizon_ms else ()
    idle_ms = idle_after_ms(spec, idle_ttl_s, horizon_ms)
    sum_of = spec.aggregates.sum_of if spec.aggregates else None

    def fn(key: tuple, frame: pd.DataFrame) -> pd.DataFrame:
        bucket = int(key[0])
        if bucket < 0:  # invalid events: pass through untouched
            return finish(without_features(frame, spec))
        if pseudonym_key:
            frame[spec.entity_key] = pseudonymise(frame[spec.entity_key], pseudonym_key)
        store = EntityStore(root, bucket, spec.entity_key, sum_of, with_ids=bool(horizon_ms))
        try:
            history = store.read(frame[spec.entity_key], batch_id)
            if horizon_ms:
                frame[ID_HASH] = hash_ids(frame[spec.event_id])
            frame, history = featurise_once(frame, history, spec, carry, horizon_ms, ID_HASH)
            store.write(history, batch_id)
            store.evict_idle(idle_ms, batch_id)
        finally:
            store.close()
        return finish(frame.drop(columns=ID_HASH, errors="ignore"))

    return fn
