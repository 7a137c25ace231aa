"""Row-level validation in real Spark: each payload of a table gets exactly the expected reason."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from rtml.infra.config.settings import load_settings
from rtml.infra.config.spec import load_spec
from rtml.pipelines.spark_io import spark_session
from rtml.pipelines.validation import PAYLOAD_REASONS, validate

pytestmark = pytest.mark.integration

SPEC = load_spec()
KAFKA_TIME = dt.datetime(2026, 11, 25, 10, 1)
BASE = {
    "transaction_id": "t1",
    "event_time": "2026-11-25T10:00:00.000Z",
    "card_id": "card_1",
    "amount": 12.5,
    "distance_from_home_km": 3.0,
    "merchant_category": "grocery",
    "channel": "pos",
    "card_present": True,
}


def ev(**fields: object) -> bytes:
    return json.dumps({**BASE, **fields}).encode()


def token(field: str, text: str) -> bytes:
    """The event with ``field``'s value written as a raw token (e.g. a bare NaN)."""
    return json.dumps({**BASE, field: "__X__"}).replace('"__X__"', text).encode()


def without(field: str) -> bytes:
    return json.dumps({k: v for k, v in BASE.items() if k != field}).encode()


CASES: list[tuple[str, bytes | None, str | None]] = [
    ("valid", ev(), None),
    ("whitespace around the object", b" \n\t" + ev() + b"\r\n", None),
    ("integer in a double field", token("amount", "12"), None),
    ("the string NaN in a string field", ev(card_id="NaN"), None),
    ("array in a string field", ev(transaction_id=[1, 2]), "wrong_type:transaction_id"),
    ("object in a string field", ev(card_id={"a": 1}), "wrong_type:card_id"),
    ("array in a category", ev(merchant_category=["grocery"]), "wrong_type:merchant_category"),
    ("number in a string field", ev(transaction_id=12), "wrong_type:transaction_id"),
    ("boolean in a string field", ev(card_id=True), "wrong_type:card_id"),
    ("object as event time", ev(event_time={"a": 1}), "wrong_type:event_time"),
    ("number as ISO event time", ev(event_time=1764064800000), "wrong_type:event_time"),
    ("string in a double field", ev(amount="12.5"), "wrong_type:amount"),
    ("the string NaN in a double field", ev(amount="NaN"), "wrong_type:amount"),
    ("array in a double field", ev(amount=[1]), "wrong_type:amount"),
    ("string in a boolean field", ev(card_present="true"), "wrong_type:card_present"),
    ("bare NaN in a string field", token("transaction_id", "NaN"), "non_finite:transaction_id"),
    ("bare Infinity in a string field", token("card_id", "Infinity"), "non_finite:card_id"),
    ("bare -Infinity in a string field", token("card_id", "-Infinity"), "non_finite:card_id"),
    ("bare NaN in a double field", token("amount", "NaN"), "non_finite:amount"),
    ("bare NaN in a boolean field", token("card_present", "NaN"), "non_finite:card_present"),
    ("bare NaN in an extra field", token("x", "NaN"), "non_finite:x"),
    ("bare NaN nested in an array", token("x", "[1, NaN]"), "non_finite:x"),
    ("bare -Infinity nested in an object", token("x", '{"y": -Infinity}'), "non_finite:x"),
    ("number beyond double range", token("amount", "1e400"), "non_finite:amount"),
    ("a lone NUL byte", b"\x00", "unparseable_json"),
    ("NUL bytes only", b"\x00" * 40, "unparseable_json"),
    ("NUL inside a string", ev().replace(b'"card_1"', b'"card\x00_1"'), "unparseable_json"),
    ("NUL inside the event time", ev().replace(b"10:00:00", b"10:00\x00:00"), "unparseable_json"),
    ("NUL after the object", ev() + b"\x00", "unparseable_json"),
    ("text after the object", ev() + b" x", "unparseable_json"),
    ("a second object", ev() + b' {"card_id": "c2"}', "unparseable_json"),
    ("a second object after a comma", ev() + b', {"card_id": "c2"}', "unparseable_json"),
    ("truncated", ev()[:40], "unparseable_json"),
    ("single quotes", ev().replace(b'"card_1"', b"'card_1'"), "unparseable_json"),
    ("array payload", b"[1, 2, 3]", "not_json_object"),
    ("number payload", b"5", "not_json_object"),
    ("duplicate key", ev()[:-1] + b', "card_id": "card_2"}', "duplicate_field:card_id"),
    ("empty id", ev(transaction_id=""), "missing_field:transaction_id"),
    ("null entity", ev(card_id=None), "missing_field:card_id"),
    ("absent entity", without("card_id"), "missing_field:card_id"),
    ("escaped NUL in the entity", ev(card_id="card_1\u0000x"), "control_character:card_id"),
    ("escaped newline in the id", ev(transaction_id="t\n1"), "control_character:transaction_id"),
    ("extra field", ev(x={"y": 1}), "extra_field:x"),
    ("out of range", ev(amount=60000), "out_of_range:amount"),
    ("unknown strict category", ev(channel="teleport"), "unknown_category:channel"),
    ("unparseable event time", ev(event_time="yesterday"), "bad_event_time:event_time"),
    ("future event time", ev(event_time="2999-01-01T00:00:00.000Z"), "event_time_in_future:event_time"),
    ("empty payload", b"", "empty_payload"),
    ("no payload", None, "empty_payload"),
    ("invalid UTF-8", ev().replace(b'"card_', b'"\xff\xfe_'), "invalid_utf8"),
    ("oversized", ev(x="y" * 20_000), "oversized_payload"),
]


def test_every_payload_gets_its_reason_naming_the_field(tmp_path: Path) -> None:
    settings = load_settings(use_default_file=False, overrides={"state_dir": tmp_path / "state"})
    spark = spark_session(settings, "rtml-validation-test")
    rows = [(None, v, "events", 0, i, KAFKA_TIME) for i, (_, v, _) in enumerate(CASES)]
    ddl = "key binary, value binary, topic string, partition int, offset bigint, timestamp timestamp"
    out = validate(spark.createDataFrame(rows, ddl), SPEC, 16_384).orderBy("offset").collect()
    got = {name: r["_reason"] for (name, _, _), r in zip(CASES, out, strict=True)}
    assert got == {name: reason for name, _, reason in CASES}
    for reason in filter(None, got.values()):
        family, _, field = reason.partition(":")
        assert (family in PAYLOAD_REASONS) != bool(field), reason  # a field-level reason names it
    valid = out[0].asDict()
    assert {k: valid[k] for k in BASE} == BASE  # values typed as the spec says
    assert out[2]["amount"] == 12.0 and out[3]["card_id"] == "NaN"
