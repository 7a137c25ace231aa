"""Synthetic card transactions for the default spec, vectorised with numpy.

Fraud (about 1%) has learnable structure: bursts of several transactions on one card within
minutes, unusual amounts for that card, risky merchant categories, night hours, far from home,
card not present. ``drift_at`` switches to a shifted distribution *and* concept: legitimate
spend inflates and moves online, and fraud turns into small card-present skimming near home in
everyday categories, so a model trained before the drift degrades after it.

>>> g = CardTransactionGenerator(seed=7, n_cards=100)
>>> frame = g.batch(1000)
>>> len(frame), bool(0 < frame["is_fraud"].mean() < 0.05)
(1000, True)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from rtml.infra.config.spec import StreamSpec

CATEGORIES = [
    "grocery",
    "restaurant",
    "fuel",
    "travel",
    "electronics",
    "jewelry",
    "online_gaming",
    "pharmacy",
    "apparel",
    "gift_cards",
]
_LEGIT_P = np.array([0.30, 0.18, 0.14, 0.04, 0.05, 0.01, 0.02, 0.10, 0.14, 0.02])
_FRAUD_P = np.array([0.02, 0.02, 0.02, 0.16, 0.26, 0.16, 0.12, 0.01, 0.05, 0.18])
_DRIFT_LEGIT_P = np.array([0.22, 0.14, 0.10, 0.06, 0.10, 0.02, 0.06, 0.08, 0.18, 0.04])
_DRIFT_FRAUD_P = np.array([0.35, 0.10, 0.25, 0.0, 0.02, 0.0, 0.0, 0.20, 0.08, 0.0])


@dataclass
class CardTransactionGenerator:
    """Reproducible stream of card transactions as pandas frames (event time in ms since epoch).

    The seed fixes the data (cards, amounts, fraud), not the transaction ids: each generator draws a
    run nonce, so two runs with the same seed never repeat an id (``tx-<seed>-<run>-<n>``; pass
    ``run`` to fix it too).
    """

    seed: int = 42
    n_cards: int = 5_000
    fraud_rate: float = 0.015
    drift_at: int | None = None
    events_per_sim_second: float = 2.0
    start_ms: int | None = None
    run: str | None = None
    _rng: np.random.Generator = field(init=False, repr=False)
    _produced: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        if self.run is None:
            import secrets

            self.run = secrets.token_hex(4)
        cards = np.random.default_rng(self.seed + 1)
        self._card_ids = np.array([f"card_{i:06d}" for i in range(self.n_cards)])
        self._card_mu = cards.normal(3.4, 0.5, self.n_cards)  # log of typical spend
        if self.start_ms is None:
            self.start_ms = int(datetime.now(UTC).timestamp() * 1000)

    def batch(self, n: int, end_ms: int | None = None) -> pd.DataFrame:
        """The next n events; event times advance at events_per_sim_second from start_ms."""
        rng = self._rng
        idx = np.arange(self._produced, self._produced + n)
        drifted = idx >= self.drift_at if self.drift_at is not None else np.zeros(n, dtype=bool)
        card = rng.integers(0, self.n_cards, n)
        t_ms = self.start_ms + (idx / self.events_per_sim_second * 1000).astype(np.int64)
        if end_ms is not None:
            t_ms = np.minimum(t_ms, end_ms)
        hour = (t_ms // 3_600_000) % 24
        # before the drift fraud prefers the night; bursts add ~2.5 followers per seed
        night = np.where((hour < 6) & ~drifted, 3.0, 0.6)
        fraud = rng.random(n) < self.fraud_rate / 3.5 * night / 1.2
        # bursts: a fraud seed is followed by 1-4 more frauds on the same card
        seeds = np.flatnonzero(fraud)
        for s in seeds:
            k = int(rng.integers(1, 5))
            stop = min(n, s + 1 + k * 3)
            follow = np.arange(s + 1, stop, 3)
            fraud[follow] = True
            card[follow] = card[s]
        mu = self._card_mu[card]
        amount = np.exp(rng.normal(mu, 0.6))
        amount = np.where(drifted & ~fraud, amount * 1.6, amount)
        fraud_amount = np.exp(rng.normal(mu + 1.8, 0.7))
        skim_amount = np.exp(rng.normal(mu - 0.2, 0.5))
        amount = np.where(fraud, np.where(drifted, skim_amount, fraud_amount), amount)

        legit_cat = np.where(drifted, rng.choice(10, n, p=_DRIFT_LEGIT_P), rng.choice(10, n, p=_LEGIT_P))
        fraud_cat = np.where(drifted, rng.choice(10, n, p=_DRIFT_FRAUD_P), rng.choice(10, n, p=_FRAUD_P))
        cat = np.where(fraud, fraud_cat, legit_cat)

        distance = rng.exponential(6.0, n)
        distance = np.where(fraud & ~drifted, rng.uniform(80, 4000, n), distance)
        distance = np.where(fraud & drifted, rng.exponential(3.0, n), distance)

        online = rng.random(n) < np.where(drifted, 0.45, 0.2)
        online = np.where(fraud, ~drifted & (rng.random(n) < 0.85), online)
        atm = ~online & (rng.random(n) < 0.05)
        channel = np.where(online, "online", np.where(atm, "atm", "pos"))
        card_present = ~online

        self._produced += n
        return pd.DataFrame(
            {
                "transaction_id": [f"tx-{self.seed}-{self.run}-{i:09d}" for i in idx],
                "event_time_ms": t_ms,
                "card_id": self._card_ids[card],
                "amount": np.round(np.clip(amount, 0.5, 49_000.0), 2),
                "distance_from_home_km": np.round(np.clip(distance, 0, 19_000.0), 3),
                "merchant_category": np.array(CATEGORIES)[cat],
                "channel": channel,
                "card_present": card_present,
                "is_fraud": fraud.astype(np.int64),
                "drifted": drifted,
            }
        )


def to_event_frame(frame: pd.DataFrame, spec: StreamSpec) -> pd.DataFrame:
    """Generator output -> event fields as the spec names them (label and bookkeeping dropped)."""
    out = frame
    if "event_time_ms" in frame:
        out = frame.rename(columns={"event_time_ms": spec.event_time})
        if spec.event_time_format == "iso8601":
            out[spec.event_time] = pd.to_datetime(out[spec.event_time], unit="ms", utc=True).dt.strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            )
        elif spec.event_time_format == "epoch_s":
            out[spec.event_time] = out[spec.event_time] / 1000
    return out[spec.event_fields]


def encode_events(events: pd.DataFrame) -> list[bytes]:
    """JSON lines, one per event (pandas' C encoder, no per-event Python json.dumps)."""
    text = events.to_json(orient="records", lines=True, double_precision=10)
    return [line.encode() for line in text.splitlines()]


MALFORMED_KINDS = [
    "bad_json",
    "not_object",
    "wrong_type",
    "missing_field",
    "extra_field",
    "nan",
    "inf",
    "out_of_range",
    "oversized",
    "bad_utf8",
    "empty",
    "bad_event_time",
    "future_event_time",
    "unknown_category",
    "array_in_string",
    "object_in_string",
    "nan_in_string",
    "infinity_in_string",
    "nul_byte",
    "duplicate_field",
    "trailing_data",
]


def malform(payload: bytes, kind: str, spec: StreamSpec, rng: np.random.Generator, max_bytes: int) -> bytes:
    """Turn one valid JSON event into an invalid one of the given kind."""
    ev = json.loads(payload)
    num = [f for f in spec.features if f.type == "double"]
    f = num[int(rng.integers(len(num)))] if num else None
    if kind == "bad_json":
        return payload[: max(1, len(payload) // 2)]
    if kind == "not_object":
        return b"[1, 2, 3]"
    if kind in ("nan_in_string", "infinity_in_string"):  # bare tokens, not JSON: Python's json writes them
        target = spec.event_id if kind == "nan_in_string" else spec.entity_key
        return json.dumps({**ev, target: float("nan") if kind == "nan_in_string" else float("-inf")}).encode()
    if kind == "nul_byte":  # a raw NUL inside the event time string: control characters are not JSON
        return json.dumps({**ev, spec.event_time: "__NUL__"}).encode().replace(b"__NUL__", b"2026\x00")
    if kind == "duplicate_field":  # the entity twice: which one is the truth?
        return payload[:-1] + b', "' + spec.entity_key.encode() + b'": "other"}'
    if kind == "trailing_data":
        return payload + b' {"' + spec.entity_key.encode() + b'": "other"}'
    if kind == "wrong_type" and f:
        ev[f.name] = "twelve"
    elif kind == "missing_field":
        ev.pop(spec.features[int(rng.integers(len(spec.features)))].name)
    elif kind == "extra_field":
        ev["unexpected_field"] = 1
    elif kind in ("nan", "inf") and f:
        return (
            json.dumps({**ev, f.name: "__X__"})
            .replace('"__X__"', "NaN" if kind == "nan" else "Infinity")
            .encode()
        )
    elif kind == "out_of_range" and f and f.max is not None:
        ev[f.name] = f.max * 10 + 1
    elif kind == "oversized":
        ev["unexpected_field"] = "x" * (max_bytes + 10)
    elif kind == "bad_utf8":
        return payload.replace(b'"card_', b'"\xff\xfe_') if b'"card_' in payload else b'{"\xff": 1}'
    elif kind == "empty":
        return b""
    elif kind == "bad_event_time":
        ev[spec.event_time] = "yesterday-ish"
    elif kind == "future_event_time":
        ev[spec.event_time] = "2999-01-01T00:00:00.000Z"
    elif kind == "array_in_string":
        ev[spec.event_id] = [1, 2]
    elif kind == "object_in_string":
        ev[spec.entity_key] = {"a": 1}
    elif kind == "unknown_category":
        strict = [c for c in spec.features if c.categories and c.on_unknown == "reject"]
        if not strict:
            return payload[:-1]  # no strict category in this spec: fall back to bad JSON
        ev[strict[0].name] = "teleport"
    return json.dumps(ev).encode()
