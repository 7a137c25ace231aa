"""Parse and validate raw Kafka events against the stream spec, as Spark SQL expressions.

Everything runs in the JVM, column-at-a-time: no per-event Python. The payload is parsed once by
Spark's strict JSON parser into a VARIANT (``try_parse_json``), which keeps each value's JSON type:
a string field accepts only a JSON string (not a number, boolean, array or object), a number field
only a JSON number, and so on. Each row gets ``_reason``: NULL for a valid event, else the first
failing check. Payload-level reasons: ``empty_payload``, ``oversized_payload``, ``invalid_utf8``,
``unparseable_json`` (not one JSON value: syntax error, truncation, control characters such as
NUL bytes, anything after the object), ``not_json_object``. Every other reason names the field, after a colon:
``duplicate_field:f``, ``non_finite:f`` (a bare ``NaN``/``Infinity``/``-Infinity`` token, which
is not JSON, anywhere in the top-level field ``f``; or a number too large for a double),
``wrong_type:f``, ``missing_field:f``, ``extra_field:f[,g]``, ``out_of_range:f``,
``unknown_category:f``, ``bad_event_time:f``, ``control_character:f`` (a JSON-escaped control
character such as ``\u0000`` in the event id or the entity key), ``event_time_in_future:f`` (more than
``max_future_seconds`` after the Kafka record time).

The diagnosis of a payload the strict parser rejected (which field holds the ``NaN`` token, which
key is duplicated) is a second, lenient parse that Spark evaluates only for those rows.
"""

from __future__ import annotations

from typing import Any

from rtml.features.featurise import EVENT_MS
from rtml.infra.config.spec import UNKNOWN_CATEGORY, FeatureSpec, StreamSpec

# reasons about the payload as a whole; every other reason is ``<check>:<field>``
PAYLOAD_REASONS = frozenset(
    {"empty_payload", "oversized_payload", "invalid_utf8", "unparseable_json", "not_json_object"}
)
_SPARK_TYPES = {"double": "double", "long": "bigint", "string": "string", "boolean": "boolean"}
_INTEGRAL = ["TINYINT", "SMALLINT", "INT", "BIGINT"]
# the lenient parse for the diagnosis: NaN/Infinity allowed, nothing else beyond strict JSON
_LENIENT = {
    "mode": "PERMISSIVE",
    "allowNonNumericNumbers": "true",
    "allowSingleQuotes": "false",
    "allowUnquotedControlChars": "false",
}
# how a bare non-finite token looks in a map<string,string> parse: re-serialised, hence quoted
_BARE_TOKEN = r'^"[-+]?(NaN|Infinity|INF)"$'
_NESTED_TOKEN = r'[\[:,]"[-+]?(NaN|Infinity|INF)"[\],}]'


def _fields(spec: StreamSpec) -> list[tuple[str, str, bool]]:
    """(name, spark type, required) of every event field."""
    time_type = spec.event_time_type
    out = [
        (spec.event_id, "string", True),
        (spec.event_time, time_type, True),
        (spec.entity_key, "string", True),
    ]
    out += [(f.name, _SPARK_TYPES[f.type], f.required) for f in spec.features]
    return out


def event_schema_ddl(spec: StreamSpec) -> str:
    return ", ".join(f"`{n}` {t}" for n, t, _ in _fields(spec))


def _first(conds: list[tuple[Any, Any]]) -> Any:
    from pyspark.sql import functions as F

    return F.coalesce(*[F.when(c, r) for c, r in conds]) if conds else F.lit(None).cast("string")


def _type_ok(json_type: Any, spark_type: str) -> Any:
    """Does a value of this JSON type (``schema_of_variant``) fit a field of this Spark type?"""
    if spark_type == "string":
        return json_type == "STRING"
    if spark_type == "boolean":
        return json_type == "BOOLEAN"
    if spark_type == "bigint":  # parse_json stores 5.0 as DECIMAL(1,0): integral decimals are fine
        return json_type.isin(_INTEGRAL) | json_type.rlike(r"^DECIMAL\([0-9]+,0\)$")
    return json_type.isin([*_INTEGRAL, "FLOAT", "DOUBLE"]) | json_type.startswith("DECIMAL(")


def _diagnose_unparsed(v: Any) -> Any:
    """Reason for a payload the strict parser rejected; evaluated only for those rows."""
    from pyspark.sql import functions as F

    keys = F.json_object_keys(v)  # tolerant of duplicate keys, unlike the VARIANT parser
    dups = F.filter(keys, lambda k: F.size(F.filter(keys, lambda j: j == k)) > 1)
    lenient = F.from_json(v, "map<string,string>", _LENIENT)
    bare = F.map_keys(F.map_filter(lenient, lambda _, x: x.rlike(_BARE_TOKEN)))
    nested = F.map_keys(F.map_filter(lenient, lambda _, x: x.rlike(_NESTED_TOKEN)))
    return F.coalesce(
        F.when(F.size(dups) > 0, F.concat(F.lit("duplicate_field:"), dups[0])),
        F.when(F.size(bare) > 0, F.concat(F.lit("non_finite:"), bare[0])),
        F.when(F.size(nested) > 0, F.concat(F.lit("non_finite:"), nested[0])),
        F.lit("unparseable_json"),
    )


def validate(raw: Any, spec: StreamSpec, max_bytes: int) -> Any:
    """Raw Kafka rows -> rows with the spec's fields, ``_event_ms`` and ``_reason``."""
    from pyspark.sql import functions as F

    v = F.col("_raw")
    var = F.col("_var")
    df = raw.withColumn("_raw", F.col("value").cast("string"))
    # wrapped in [ ]: the parser reads one value and ignores what follows it, the array makes it read
    # to the end (``{...} x`` fails) and a second value shows as element 1 (``{...}, {...}``). One
    # shape still escapes: a ``]`` right after the object ends the wrapper early (``{...}] x``); the
    # event is then that object, validated like any other.
    df = df.withColumn("_var", F.try_parse_json(F.concat(F.lit("["), v, F.lit("]"))))
    # the object's keys (NULL when the payload is not an object), for the extra-field check
    df = df.withColumn("_keys", F.map_keys(F.try_variant_get(var, "$[0]", "map<string,variant>")))
    fields = _fields(spec)
    types = {n: F.col(f"_t_{n}") for n, _, _ in fields}
    # each field looked up once; its JSON type ('STRING', 'BIGINT', 'ARRAY<...>', 'VOID' for null;
    # NULL when absent), then its value, NULL when absent, null or of the wrong type
    df = df.select("*", *[F.variant_get(var, f"$[0].{n}", "variant").alias(f"_f_{n}") for n in types])
    df = df.select("*", *[F.schema_of_variant(F.col(f"_f_{n}")).alias(f"_t_{n}") for n in types])
    ok = {n: _type_ok(types[n], t) for n, t, _ in fields}
    df = df.select(
        "*",
        *[F.when(ok[n], F.try_variant_get(F.col(f"_f_{n}"), "$", t)).alias(f"_v_{n}") for n, t, _ in fields],
    )
    val = {n: F.col(f"_v_{n}") for n, _, _ in fields}

    conds: list[tuple[Any, Any]] = [
        (F.col("value").isNull() | (F.octet_length("value") == 0), F.lit("empty_payload")),
        (F.octet_length("value") > max_bytes, F.lit("oversized_payload")),
        (~F.is_valid_utf8(v), F.lit("invalid_utf8")),
        (var.isNull(), _diagnose_unparsed(v)),
        (F.variant_get(var, "$[1]", "variant").isNotNull(), F.lit("unparseable_json")),
        (F.col("_keys").isNull(), F.lit("not_json_object")),
    ]
    for n, _, _ in fields:  # present and not null, but of another JSON type
        conds.append((types[n].isNotNull() & (types[n] != "VOID") & ~ok[n], F.lit(f"wrong_type:{n}")))
    for n, _, required in fields:
        if required:
            conds.append((val[n].isNull(), F.lit(f"missing_field:{n}")))
    conds.append((F.length(val[spec.event_id]) == 0, F.lit(f"missing_field:{spec.event_id}")))
    for n in (spec.event_id, spec.entity_key):  # an escaped control character (``\u0000``) in an id:
        # pandas' string hashing stops at a NUL, so "c\u0000x" would share the state of card "c"
        conds.append((val[n].rlike("[\\x00-\\x1f]"), F.lit(f"control_character:{n}")))
    if spec.extra_fields == "reject":
        keys = F.col("_keys")
        extra = F.array_except(keys, F.array(*[F.lit(n) for n, _, _ in fields]))
        conds.append((F.size(extra) > 0, F.concat(F.lit("extra_field:"), F.array_join(extra, ","))))
    for f in spec.features:
        conds += _feature_checks(f, val[f.name])

    if spec.event_time_format == "epoch_ms":
        event_ms = val[spec.event_time]
    elif spec.event_time_format == "epoch_s":
        event_ms = F.round(val[spec.event_time] * 1000).cast("bigint")
    else:
        event_ms = F.unix_millis(F.try_to_timestamp(val[spec.event_time]))
    df = df.withColumn(EVENT_MS, event_ms)
    conds.append((F.col(EVENT_MS).isNull(), F.lit(f"bad_event_time:{spec.event_time}")))
    # "Future" is relative to the Kafka record time, not the clock: deterministic (a replayed batch
    # quarantines exactly the same events) and no per-batch literal, which would make Spark compile
    # the validation code again every micro-batch. Records without a timestamp (-1) skip the check.
    kafka_ms = F.unix_millis(F.col("timestamp"))
    future_ms = F.when(kafka_ms > 0, kafka_ms + F.lit(spec.max_future_seconds * 1000))
    conds.append((F.col(EVENT_MS) > future_ms, F.lit(f"event_time_in_future:{spec.event_time}")))

    df = df.withColumn("_reason", _first(conds))
    mapped = {f.name: f for f in spec.features if f.categories and f.on_unknown == "map"}
    out = []
    for n, _, _ in fields:
        c = val[n]
        if n in mapped:  # unseen category -> the unknown bucket, as the spec says
            c = F.when(c.isin(mapped[n].categories) | c.isNull(), c).otherwise(F.lit(UNKNOWN_CATEGORY))
        out.append(c.alias(n))
    df = df.select("key", "value", "topic", "partition", "offset", "timestamp", "_reason", EVENT_MS, *out)
    return df


def _feature_checks(f: FeatureSpec, col: Any) -> list[tuple[Any, Any]]:
    from pyspark.sql import functions as F

    out: list[tuple[Any, Any]] = []
    if f.type == "double":  # a number beyond the double range (1e400) parses as infinity
        out.append((F.isnan(col) | (F.abs(col) == F.lit(float("inf"))), F.lit(f"non_finite:{f.name}")))
    if f.min is not None:
        out.append((col < F.lit(f.min), F.lit(f"out_of_range:{f.name}")))
    if f.max is not None:
        out.append((col > F.lit(f.max), F.lit(f"out_of_range:{f.name}")))
    if f.categories and f.on_unknown == "reject":
        out.append((~col.isin(f.categories), F.lit(f"unknown_category:{f.name}")))
    return out
