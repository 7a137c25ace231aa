"""What the quarantine sink and topic keep of an invalid event's payload.

Every quarantined event keeps its reason and Kafka coordinates. Its payload, by settings:

- not pseudonymising, ``scoring.quarantine_raw`` unset: the raw payload (``payload_b64``, and
  ``payload`` when it is UTF-8), as before;
- ``scoring.pseudonymise_entities: true``: a payload that is a JSON object with the entity field is
  kept with that field's value replaced by its pseudonym (the keyed hash the score sink carries:
  the same card gets the same pseudonym in both), every other byte as sent; any other payload (not
  UTF-8, not a JSON object, no entity field: rtml cannot tell where an entity id might be) follows
  ``scoring.quarantine_raw``: ``encrypt`` (the default when pseudonymising: a Fernet token in
  ``payload_encrypted``, key ``scoring.quarantine_key`` or one derived from the pseudonym key),
  ``drop`` (nothing kept) or ``keep`` (raw).

``payload_state`` says which of ``pseudonymised``, ``encrypted``, ``dropped`` or ``raw`` a row got.
This runs on the driver over the quarantined rows only: valid events never come here.

>>> from rtml.infra.config.settings import ScoringSettings
>>> s = ScoringSettings(pseudonymise_entities=True, pseudonym_key="k")
>>> token = encrypt_payload(b'{"card_id": "4111', s)
>>> decrypt_payload(token, s)
b'{"card_id": "4111'
"""

from __future__ import annotations

import base64
import json
import re
import time
from json.decoder import scanstring
from typing import Any

from rtml.infra.config.settings import ScoringSettings
from rtml.pipelines.entity_state import pseudonymise
from rtml.pipelines.scorer import KAFKA_MS

_WS = re.compile(r"[ \t\r\n]*")
_DECODER = json.JSONDecoder()  # reads NaN/Infinity too: such events are quarantined, still pseudonymised
_HKDF_INFO = b"rtml quarantine payload v1"


def fernet_key(scoring: ScoringSettings) -> bytes:
    """``scoring.quarantine_key``, or a key derived (HKDF-SHA256) from ``scoring.pseudonym_key``."""
    if scoring.quarantine_key:
        return scoring.quarantine_key.get_secret_value().encode()
    if not scoring.pseudonym_key:
        raise ValueError("no quarantine key: set scoring.quarantine_key (RTML_SCORING__QUARANTINE_KEY)")
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        scoring.pseudonym_key.get_secret_value().encode()
    )
    return base64.urlsafe_b64encode(raw)


def encrypt_payload(payload: bytes, scoring: ScoringSettings) -> str:
    from cryptography.fernet import Fernet

    return Fernet(fernet_key(scoring)).encrypt(payload).decode()


def decrypt_payload(token: str, scoring: ScoringSettings) -> bytes:
    """The raw payload of a ``payload_encrypted`` token; ValueError when the key does not fit."""
    from cryptography.fernet import Fernet, InvalidToken

    try:
        return Fernet(fernet_key(scoring)).decrypt(token.encode())
    except InvalidToken:
        raise ValueError(
            "quarantined payload does not decrypt with this key "
            "(scoring.quarantine_key, or the pseudonym_key it was derived from)"
        ) from None


def entity_spans(text: str, entity: str) -> list[tuple[int, int, Any]] | None:
    """(start, end, value) of each top-level ``entity`` member of a JSON object; None if not one.

    >>> entity_spans('{"a": 1, "card_id": "c7"}', "card_id")
    [(20, 24, 'c7')]
    >>> entity_spans('[1, 2]', "card_id") is None
    True
    """
    try:
        i = _WS.match(text, 0).end()
        if not text.startswith("{", i):
            return None
        i = _WS.match(text, i + 1).end()
        spans: list[tuple[int, int, Any]] = []
        members = not text.startswith("}", i)
        while members:
            if not text.startswith('"', i):
                return None
            key, i = scanstring(text, i + 1)  # strict: raw control characters are an error
            i = _WS.match(text, i).end()
            if not text.startswith(":", i):
                return None
            i = _WS.match(text, i + 1).end()
            value, end = _DECODER.raw_decode(text, i)
            if key == entity:
                spans.append((i, end, value))
            i = _WS.match(text, end).end()
            members = text.startswith(",", i)
            if members:
                i = _WS.match(text, i + 1).end()
            elif not text.startswith("}", i):
                return None
        # the object must be the whole payload: anything after it could hold an entity id too
        return spans if _WS.match(text, i + 1).end() == len(text) else None
    except ValueError:  # json.JSONDecodeError included
        return None


class QuarantinePayloads:
    """Builds the quarantine table of a micro-batch's invalid rows, by the privacy settings."""

    def __init__(self, scoring: ScoringSettings, entity_key: str) -> None:
        self.scoring = scoring
        self.entity_key = entity_key
        self.policy = scoring.raw_payloads
        key = scoring.pseudonym_key
        self.pseudonym_key = key.get_secret_value() if scoring.pseudonymise_entities and key else None
        self._fernet: Any = None
        if self.policy == "encrypt":
            from cryptography.fernet import Fernet

            self._fernet = Fernet(fernet_key(scoring))

    def table(self, bad: Any) -> Any:
        """Arrow rows with ``_reason``, ``value`` and Kafka coordinates -> the quarantine table."""
        import pyarrow as pa

        raw: list[bytes | None] = bad.column("value").to_pylist()
        n = len(raw)
        b64: list[str | None] = [None] * n
        text: list[str | None] = [None] * n
        encrypted: list[str | None] = [None] * n
        state = ["raw"] * n
        done = self._pseudonymise(raw, b64, text, state) if self.pseudonym_key else set()
        for i, v in enumerate(raw):
            if i in done:
                continue
            if self.policy == "keep":
                b64[i], text[i] = base64.b64encode(v or b"").decode(), _utf8(v) if v is not None else None
            elif self.policy == "encrypt":
                encrypted[i], state[i] = self._fernet.encrypt(v or b"").decode(), "encrypted"
            else:
                state[i] = "dropped"
        now = int(time.time() * 1000)
        s = pa.string()
        return pa.table(
            {
                "reason": bad.column("_reason"),
                "payload_b64": pa.array(b64, s),
                "payload": pa.array(text, s),
                "payload_encrypted": pa.array(encrypted, s),
                "payload_state": pa.array(state, s),
                "topic": bad.column("topic"),
                "partition": bad.column("partition"),
                "offset": bad.column("offset"),
                KAFKA_MS: bad.column(KAFKA_MS),
                "quarantined_at_ms": pa.array([now] * n, pa.int64()),
            }
        )

    def _pseudonymise(
        self, raw: list[bytes | None], b64: list[str | None], text: list[str | None], state: list[str]
    ) -> set[int]:
        """Fill the rows whose entity field can be replaced; return their indices."""
        import pandas as pd

        found: list[tuple[int, str, list[tuple[int, int, Any]]]] = []
        sources: list[str] = []
        for i, v in enumerate(raw):
            t = _utf8(v or b"")
            spans = entity_spans(t, self.entity_key) if t is not None else None
            if not spans:
                continue
            spans = [sp for sp in spans if sp[2] is not None]  # JSON null: nothing to hide
            found.append((i, t, spans))  # a string is hashed as itself (= the score sink), others as sent
            sources += [sp[2] if isinstance(sp[2], str) else t[sp[0] : sp[1]] for sp in spans]
        hashed = pseudonymise(pd.Series(sources, dtype=object), self.pseudonym_key) if sources else []
        names = iter(hashed)
        for i, t, spans in found:
            parts, last = [], 0
            for start, end, _ in spans:
                parts += [t[last:start], json.dumps(next(names))]
                last = end
            t = "".join([*parts, t[last:]])
            text[i], b64[i], state[i] = t, base64.b64encode(t.encode()).decode(), "pseudonymised"
        return {i for i, _, _ in found}


def _utf8(v: bytes) -> str | None:
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        return None
