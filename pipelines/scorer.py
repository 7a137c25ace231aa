"""Worker-side scoring: featurised events -> score rows, with the model version the driver chose.

The driver resolves ``@champion`` once per micro-batch and hands the version to that batch's
tasks as a Spark job property (:data:`VERSION_PROPERTY`, set with ``setLocalProperty`` just before
the batch's action). Workers read it from their ``TaskContext`` and load that version (cached per
Python worker, which Spark reuses), so the streaming plan is built once and still every row
carries the version that scored it. With per-entity state the scorer runs inside the state
function (one Python hop per micro-batch); without state, in ``mapInArrow``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from rtml.features.featurise import EVENT_MS, model_frame
from rtml.infra.config.spec import StreamSpec
from rtml.pipelines import explanations

VERSION_PROPERTY = "rtml.model.version"
SHADOW_PROPERTY = "rtml.model.shadow_version"  # "" when no @shadow
SHADOW_COLUMNS = ("shadow_version", "shadow_score", "shadow_decision")
KAFKA_MS = "kafka_timestamp_ms"
BATCH_ID_PROPERTY = "streaming.sql.batchId"  # Spark sets it on every job of a micro-batch


def task_model_version() -> str:
    """The model version the driver handed to the running task."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    version = ctx.getLocalProperty(VERSION_PROPERTY) if ctx is not None else None
    if not version:
        raise RuntimeError(f"no model version for this task: job property '{VERSION_PROPERTY}' is not set")
    return version


def task_batch_id() -> int:
    """The id of the micro-batch the running task belongs to (Spark's own job property), so that a
    function in the streaming plan, built once, still knows its batch (a replay keeps the id)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    batch = ctx.getLocalProperty(BATCH_ID_PROPERTY) if ctx is not None else None
    if not batch:
        raise RuntimeError(f"no micro-batch for this task: job property '{BATCH_ID_PROPERTY}' is not set")
    return int(batch)


def task_shadow_version() -> str | None:
    """The @shadow version the driver handed to the running task (None: none)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return (ctx.getLocalProperty(SHADOW_PROPERTY) if ctx is not None else None) or None


def score_columns(spec: StreamSpec, explain_top_k: int = 0) -> list[tuple[str, str]]:
    """(name, Spark type) of a score row, in order (the explanation columns last, when k > 0)."""
    time_type = spec.event_time_type
    return [
        (spec.event_id, "string"),
        (spec.event_time, time_type),
        (spec.entity_key, "string"),
        (EVENT_MS, "bigint"),
        ("partition", "int"),
        ("offset", "bigint"),
        ("_reason", "string"),
        ("value", "binary"),
        ("topic", "string"),
        ("score", "double"),
        ("decision", "bigint"),
        ("model_version", "string"),
        ("scored_at_ms", "bigint"),
        ("latency_ms", "bigint"),
        (KAFKA_MS, "bigint"),
        ("shadow_version", "string"),
        ("shadow_score", "double"),
        ("shadow_decision", "bigint"),
        *[(n, "double") for n in spec.model_numeric_inputs],
        *[(n, "string") for n in spec.categorical_names],
        *(explanations.explain_columns(explain_top_k) if explain_top_k else []),
    ]


def score_ddl(spec: StreamSpec, explain_top_k: int = 0) -> str:
    return ", ".join(f"`{n}` {t}" for n, t in score_columns(spec, explain_top_k))


def score_arrow_schema(spec: StreamSpec, explain_top_k: int = 0) -> Any:
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "bigint": pa.int64(),
        "int": pa.int32(),
        "double": pa.float64(),
        "binary": pa.binary(),
    }
    return pa.schema([(n, types[t]) for n, t in score_columns(spec, explain_top_k)])


def score_frame(
    frame: pd.DataFrame,
    spec: StreamSpec,
    model: Any,
    version: str,
    explain_top_k: int = 0,
    shadow: tuple[Any, str] | None = None,
) -> pd.DataFrame:
    """Score the valid rows (``_reason`` null) of a featurised frame; invalid rows pass with NaN.

    With ``explain_top_k`` > 0 the rows also carry their top-k contributions
    (:mod:`rtml.pipelines.explanations`), computed in the same vectorised pass as the scores; null
    if the model's family does not explain. ``shadow`` (model, version) scores the same valid rows in
    the same pass into the ``shadow_*`` columns (null without a shadow); nothing acts on them.
    """
    valid = frame["_reason"].isna().to_numpy()
    X_all = model_frame(frame, spec)  # invalid rows pass through with their parsed inputs
    score = np.full(len(frame), np.nan)
    explanation = None
    if valid.any():
        X = X_all.loc[valid, model.columns]
        if explain_top_k and explanations.can_explain(model.learner):
            score[valid], explanation = model.learner.score_explained(X, explain_top_k)
        else:
            score[valid] = model.learner.score(X)
    now = int(time.time() * 1000)
    kafka_ms = frame[KAFKA_MS].to_numpy(dtype=np.int64)
    passthrough = [spec.event_id, spec.event_time, spec.entity_key, EVENT_MS, "partition", "offset"]
    out = frame[[*passthrough, "_reason", "value", "topic"]].copy()
    out["score"] = score
    out["decision"] = np.where(valid, score >= model.learner.threshold, False).astype("int64")
    out["model_version"] = version
    out["scored_at_ms"] = now
    out["latency_ms"] = (now - kafka_ms).astype("int64")
    out[KAFKA_MS] = kafka_ms
    s_version = pd.Series(None, index=out.index, dtype="object")
    s_score = np.full(len(frame), np.nan)
    s_decision = pd.Series(pd.NA, index=out.index, dtype="Int64")
    if shadow is not None and valid.any():
        s_model, s_name = shadow
        s_score[valid] = s_model.learner.score(X_all.loc[valid, s_model.columns])
        s_decision[valid] = (s_score[valid] >= s_model.learner.threshold).astype("int64")
        s_version[valid] = s_name
    out["shadow_version"], out["shadow_score"], out["shadow_decision"] = s_version, s_score, s_decision
    for c in X_all.columns:
        out[c] = X_all[c]
    if explain_top_k:
        explanations.fill(out, valid, explanation, explain_top_k)
    return out[[n for n, _ in score_columns(spec, explain_top_k)]]


def make_frame_scorer(
    tracking_uri: str, model_name: str, spec: StreamSpec, explain_top_k: int = 0
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """pandas frame -> score rows, with the model version of the running task."""

    def fn(frame: pd.DataFrame) -> pd.DataFrame:
        from rtml.models.lifecycle.registry import load_model

        version = task_model_version()
        model = load_model(tracking_uri, model_name, version)
        s_version = task_shadow_version()
        shadow = (load_model(tracking_uri, model_name, s_version), s_version) if s_version else None
        return score_frame(frame, spec, model, version, explain_top_k, shadow)

    return fn


def make_arrow_scorer(
    tracking_uri: str,
    model_name: str,
    spec: StreamSpec,
    pseudonym_key: str | None = None,
    explain_top_k: int = 0,
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The ``mapInArrow`` function for streams without per-entity state."""
    score = make_frame_scorer(tracking_uri, model_name, spec, explain_top_k)

    def fn(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        from rtml.pipelines.entity_state import pseudonymise

        schema = score_arrow_schema(spec, explain_top_k)
        for rb in batches:
            frame = rb.to_pandas()
            if pseudonym_key:
                ok, key = frame["_reason"].isna(), spec.entity_key
                frame.loc[ok, key] = pseudonymise(frame.loc[ok, key], pseudonym_key)
            yield pa.RecordBatch.from_pandas(score(frame), schema=schema, preserve_index=False)

    return fn
