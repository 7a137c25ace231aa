"""What quarantine keeps of an invalid payload: pseudonymised, encrypted, dropped or raw (pure logic)."""

from __future__ import annotations

import base64
import json

import pandas as pd
import pyarrow as pa
import pytest
from cryptography.fernet import Fernet

from rtml.infra.config.settings import ConfigError, ScoringSettings, load_settings
from rtml.pipelines.entity_state import pseudonymise
from rtml.pipelines.quarantine import (
    QuarantinePayloads,
    decrypt_payload,
    encrypt_payload,
    entity_spans,
)
from rtml.pipelines.scorer import KAFKA_MS

KEY = "unit-pseudonym-key"
CARD = "4111111111111111"


def _bad(payloads: list[bytes | None]) -> pa.Table:
    n = len(payloads)
    return pa.table(
        {
            "_reason": ["x"] * n,
            "value": pa.array(payloads, pa.binary()),
            "topic": ["events"] * n,
            "partition": pa.array([0] * n, pa.int32()),
            "offset": pa.array(list(range(n)), pa.int64()),
            KAFKA_MS: pa.array([1] * n, pa.int64()),
        }
    )


def _pseudo(value: str) -> str:
    return pseudonymise(pd.Series([value]), KEY).iloc[0]


def test_encrypted_payload_decrypts_with_the_key_and_not_with_another() -> None:
    derived = ScoringSettings(pseudonymise_entities=True, pseudonym_key=KEY)
    token = encrypt_payload(b'{"card_id": "' + CARD.encode(), derived)
    assert CARD not in token and KEY not in token
    assert decrypt_payload(token, derived) == b'{"card_id": "' + CARD.encode()
    other = ScoringSettings(pseudonymise_entities=True, pseudonym_key="another-key")
    with pytest.raises(ValueError, match="does not decrypt with this key"):
        decrypt_payload(token, other)
    explicit = ScoringSettings(
        pseudonymise_entities=True, pseudonym_key=KEY, quarantine_key=Fernet.generate_key().decode()
    )
    token2 = encrypt_payload(b"\x00raw", explicit)
    assert decrypt_payload(token2, explicit) == b"\x00raw"
    with pytest.raises(ValueError, match="does not decrypt"):
        decrypt_payload(token2, derived)  # an explicit key wins over the derived one


def test_entity_field_is_replaced_by_its_pseudonym_everything_else_as_sent() -> None:
    scoring = ScoringSettings(pseudonymise_entities=True, pseudonym_key=KEY)
    sent = [
        b'{"transaction_id": [1, 2], "card_id": "' + CARD.encode() + b'", "amount": NaN}',
        b'{"card_id": ' + CARD.encode() + b', "x": 1}',  # the id as a number: wrong_type, still hidden
        b'{"card_id": "c1", "card_id": "' + CARD.encode() + b'"}',  # duplicated: both replaced
        b'{"card_id": null, "amount": "x"}',
    ]
    out = QuarantinePayloads(scoring, "card_id").table(_bad(sent)).to_pydict()
    assert out["payload_state"] == ["pseudonymised"] * 4
    assert out["payload_encrypted"] == [None] * 4
    for text, b64 in zip(out["payload"], out["payload_b64"], strict=True):
        assert CARD not in text and base64.b64decode(b64).decode() == text
    assert out["payload"][0] == (
        '{"transaction_id": [1, 2], "card_id": "' + _pseudo(CARD) + '", "amount": NaN}'
    )  # the same pseudonym as the score sink's, the rest byte for byte
    assert json.loads(out["payload"][1])["card_id"] == _pseudo(CARD)
    assert out["payload"][2] == '{"card_id": "' + _pseudo("c1") + '", "card_id": "' + _pseudo(CARD) + '"}'
    assert out["payload"][3] == sent[3].decode()
    assert out["reason"] == ["x"] * 4 and out["offset"] == [0, 1, 2, 3]


def test_payloads_without_a_findable_entity_follow_the_policy() -> None:
    sent = [
        b'{"card_id": "' + CARD.encode() + b'", "t": "\x00"}',  # control character: not JSON
        b'{"card_id": "' + CARD.encode() + b'"} {"x": 1}',  # content after the object
        b'["' + CARD.encode() + b'"]',  # not an object
        b'{"cardid": "' + CARD.encode() + b'"}',  # no entity field: the id may be anywhere
        b'{"card_id": "\xff' + CARD.encode() + b'"}',  # not UTF-8
        b"",
    ]
    default = ScoringSettings(pseudonymise_entities=True, pseudonym_key=KEY)
    assert default.raw_payloads == "encrypt"
    enc = QuarantinePayloads(default, "card_id").table(_bad(sent)).to_pydict()
    assert enc["payload_state"] == ["encrypted"] * len(sent)
    assert enc["payload"] == enc["payload_b64"] == [None] * len(sent)
    assert [decrypt_payload(t, default) for t in enc["payload_encrypted"]] == sent
    drop = ScoringSettings(pseudonymise_entities=True, pseudonym_key=KEY, quarantine_raw="drop")
    dropped = QuarantinePayloads(drop, "card_id").table(_bad(sent)).to_pydict()
    assert dropped["payload_state"] == ["dropped"] * len(sent)
    assert dropped["payload"] == dropped["payload_b64"] == dropped["payload_encrypted"] == [None] * len(sent)
    assert dropped["reason"] == ["x"] * len(sent) and dropped["partition"] == [0] * len(sent)


def test_without_pseudonymisation_payloads_stay_raw_by_default() -> None:
    scoring = ScoringSettings()
    assert scoring.raw_payloads == "keep"
    out = (
        QuarantinePayloads(scoring, "card_id").table(_bad([b'{"card_id": "c1"}', b"\xff", None])).to_pydict()
    )
    assert out["payload_state"] == ["raw"] * 3
    assert out["payload"] == ['{"card_id": "c1"}', None, None]
    assert [base64.b64decode(b) for b in out["payload_b64"]] == [b'{"card_id": "c1"}', b"\xff", b""]


def test_entity_spans_reads_only_one_top_level_object() -> None:
    assert entity_spans('{"card_id": "a", "n": {"card_id": "b"}}', "card_id") == [(12, 15, "a")]
    assert entity_spans(" {} ", "card_id") == []
    assert entity_spans('{"card_id": "a",}', "card_id") is None
    assert entity_spans('{"card_id": "a"', "card_id") is None
    assert entity_spans('{"card_id" "a"}', "card_id") is None


def test_quarantine_settings_errors_are_one_line_and_the_key_is_masked() -> None:
    with pytest.raises(ConfigError, match="quarantine_raw: encrypt needs scoring.quarantine_key"):
        load_settings(overrides={"scoring": {"quarantine_raw": "encrypt"}}, use_default_file=False)
    with pytest.raises(ConfigError, match="must be a Fernet key"):
        load_settings(overrides={"scoring": {"quarantine_key": "short"}}, use_default_file=False)
    ok = load_settings(
        overrides={"scoring": {"quarantine_raw": "drop", "pseudonymise_entities": False}},
        use_default_file=False,
    )
    assert ok.scoring.raw_payloads == "drop"
    key = Fernet.generate_key().decode()
    s = load_settings(
        overrides={"scoring": {"quarantine_raw": "encrypt", "quarantine_key": key}}, use_default_file=False
    )
    assert s.scoring.raw_payloads == "encrypt" and key not in str(s.public_dict()) and key not in repr(s)
    assert decrypt_payload(encrypt_payload(b"x", s.scoring), s.scoring) == b"x"
