"""Parse and validate raw Kafka events against the stream spec, as Spark SQL expressions.

Everything runs in the JVM, column-at-a-time: no per-event Python. Each row gets ``_reason``:
NULL for a valid event, else the first failing check, e.g. ``invalid_json``,
``wrong_type:amount``, ``missing_field:card_id``, ``extra_field:foo``, ``non_finite:amount``,
``out_of_range:amount``, ``unknown_category:channel``, ``bad_event_time``,
``event_time_in_future`` (more than ``max_future_seconds`` after the Kafka record time),
``oversized_payload``, ``invalid_utf8``, ``empty_payload``.
"""

from __future__ import annotations

from typing import Any

from rtml.features.featurise import EVENT_MS
from rtml.infra.config.spec import UNKNOWN_CATEGORY, FeatureSpec, StreamSpec

_SPARK_TYPES = {"double": "double", "long": "bigint", "string": "string", "boolean": "boolean"}


def _fields(spec: StreamSpec) -> list[tuple[str, str, bool]]:
    """(name, spark type, required) of every event field."""
    time_type = "bigint" if spec.event_time_format == "epoch_ms" else "string"
    out = [
        (spec.event_id, "string", True),
        (spec.event_time, time_type, True),
        (spec.entity_key, "string", True),
    ]
    out += [(f.name, _SPARK_TYPES[f.type], f.required) for f in spec.features]
    return out


def event_schema_ddl(spec: StreamSpec) -> str:
    return ", ".join(f"`{n}` {t}" for n, t, _ in _fields(spec)) + ", `_corrupt` string"


def _first(conds: list[tuple[Any, Any]]) -> Any:
    from pyspark.sql import functions as F

    return F.coalesce(*[F.when(c, r) for c, r in conds]) if conds else F.lit(None).cast("string")


def validate(raw: Any, spec: StreamSpec, max_bytes: int) -> Any:
    """Raw Kafka rows -> rows with the spec's fields, ``_event_ms`` and ``_reason``."""
    from pyspark.sql import functions as F

    v = F.col("_raw")
    p = F.col("_p")
    df = raw.withColumn("_raw", F.col("value").cast("string"))
    df = df.withColumn("_keys", F.json_object_keys(v))
    df = df.withColumn(
        "_p",
        F.from_json(
            v,
            event_schema_ddl(spec),
            {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt", "allowNonNumericNumbers": "true"},
        ),
    )

    fields = _fields(spec)
    # key presence from the one key list already parsed (no per-field JSON re-parse)
    present = {n: F.array_contains(F.col("_keys"), n) for n, _, _ in fields}
    conds: list[tuple[Any, Any]] = [
        (F.col("value").isNull() | (F.octet_length("value") == 0), F.lit("empty_payload")),
        (F.octet_length("value") > max_bytes, F.lit("oversized_payload")),
        (~F.is_valid_utf8(v), F.lit("invalid_utf8")),
        # strict JSON check; NaN/Infinity tokens fail it but parse below and are reported as non_finite
        (F.col("_keys").isNull() & (p.isNull() | p["_corrupt"].isNotNull()), F.lit("invalid_json")),
    ]
    for n, t, _ in fields:  # typed fields the JSON parser rejected
        conds.append((p["_corrupt"].isNotNull() & present[n] & p[n].isNull(), F.lit(f"wrong_type:{n}")))
        if t == "string":  # the parser turns numbers/booleans into strings: check the raw token then
            looks_scalar = p[n].rlike(r"^(-?[0-9][0-9.eE+-]*|true|false)$")
            conds.append(
                (p[n].isNotNull() & looks_scalar & ~v.rlike(f'"{n}"\\s*:\\s*"'), F.lit(f"wrong_type:{n}"))
            )
    conds.append((p["_corrupt"].isNotNull(), F.lit("invalid_json")))
    for n, _, required in fields:
        if required:
            conds.append((p[n].isNull(), F.lit(f"missing_field:{n}")))
    conds.append((F.length(p[spec.event_id]) == 0, F.lit(f"missing_field:{spec.event_id}")))
    if spec.extra_fields == "reject":
        allowed = F.array(*[F.lit(n) for n, _, _ in fields])
        extra = F.array_except(F.col("_keys"), allowed)
        conds.append((F.size(extra) > 0, F.concat(F.lit("extra_field:"), F.array_join(extra, ","))))
    for f in spec.features:
        conds += _feature_checks(f, p[f.name])

    if spec.event_time_format == "epoch_ms":
        event_ms = p[spec.event_time]
    else:
        event_ms = F.unix_millis(F.try_to_timestamp(p[spec.event_time]))
    df = df.withColumn(EVENT_MS, event_ms)
    conds.append((F.col(EVENT_MS).isNull(), F.lit("bad_event_time")))
    # "Future" is relative to the Kafka record time, not the clock: deterministic (a replayed batch
    # quarantines exactly the same events) and no per-batch literal, which would make Spark compile
    # the validation code again every micro-batch. Records without a timestamp (-1) skip the check.
    kafka_ms = F.unix_millis(F.col("timestamp"))
    future_ms = F.when(kafka_ms > 0, kafka_ms + F.lit(spec.max_future_seconds * 1000))
    conds.append((F.col(EVENT_MS) > future_ms, F.lit("event_time_in_future")))

    df = df.withColumn("_reason", _first(conds))
    mapped = {f.name: f for f in spec.features if f.categories and f.on_unknown == "map"}
    out = []
    for n, _, _ in fields:
        c = F.col(f"_p.`{n}`")
        if n in mapped:  # unseen category -> the unknown bucket, as the spec says
            c = F.when(c.isin(mapped[n].categories) | c.isNull(), c).otherwise(F.lit(UNKNOWN_CATEGORY))
        out.append(c.alias(n))
    df = df.select("key", "value", "topic", "partition", "offset", "timestamp", "_reason", EVENT_MS, *out)
    return df


def _feature_checks(f: FeatureSpec, col: Any) -> list[tuple[Any, Any]]:
    from pyspark.sql import functions as F

    out: list[tuple[Any, Any]] = []
    if f.type == "double":
        out.append((F.isnan(col) | (F.abs(col) == F.lit(float("inf"))), F.lit(f"non_finite:{f.name}")))
    if f.min is not None:
        out.append((col < F.lit(f.min), F.lit(f"out_of_range:{f.name}")))
    if f.max is not None:
        out.append((col > F.lit(f.max), F.lit(f"out_of_range:{f.name}")))
    if f.categories and f.on_unknown == "reject":
        out.append((~col.isin(f.categories), F.lit(f"unknown_category:{f.name}")))
    return out
