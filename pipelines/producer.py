"""Put events (and later their labels) on Kafka: `rtml produce` and `rtml replay`."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kafka.errors import KafkaError

from rtml.infra.config.kafka_clients import KafkaConnectError, connection_options
from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec, load_spec
from rtml.pipelines.bulk_producer import DeliveryError, make_bulk_producer
from rtml.pipelines.generator import (
    MALFORMED_KINDS,
    CardTransactionGenerator,
    encode_events,
    malform,
    to_event_frame,
)
from rtml.pipelines.kafka_check import check_topics

KIND_HEADER = "rtml.generator.kind"


class ProduceError(Exception):
    """Bad input for produce/replay; one-line message."""


def _label_messages(spec: StreamSpec, ids: pd.Series, labels: pd.Series) -> list[bytes]:
    assert spec.label is not None
    lab = pd.DataFrame({spec.event_id: ids.to_numpy(), spec.label.field: labels.to_numpy()})
    lab["labelled_at_ms"] = int(time.time() * 1000)
    return encode_events(lab)


def _send(
    producer: Any,
    topic: str,
    values: list[bytes],
    keys: list[bytes] | None = None,
    kinds: list[str] | None = None,
) -> None:
    """Send and wait until the broker accepted every record (re-sent if not; DeliveryError if never)."""
    from rtml.pipelines.bulk_producer import deliver

    records = [
        (
            topic,
            keys[i] if keys else None,
            v,
            None,
            [(KIND_HEADER, kinds[i].encode())] if kinds and kinds[i] else None,
        )
        for i, v in enumerate(values)
    ]
    deliver(producer, records)


def stream_frames(
    settings: Settings,
    spec: StreamSpec,
    frames: Iterator[pd.DataFrame],
    rate: float | None = None,
    malformed_rate: float = 0.0,
    label_delay_s: float = 0.0,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Send each frame's events; labels follow after label_delay_s. Returns counts."""
    if not 0 <= malformed_rate < 1:
        raise ProduceError(f"malformed rate must be in [0, 1), got {malformed_rate}")
    topics = settings.kafka.topics
    try:  # bounded: bad SASL/TLS settings or a missing topic fail here, in seconds
        check_topics(settings, [topics.events, topics.labels])
    except KafkaConnectError as exc:
        raise ProduceError(str(exc)) from None
    producer = make_bulk_producer(connection_options(settings), settings.kafka.io_client)
    rng = np.random.default_rng(seed + 99)
    pending: collections.deque[tuple[float, list[bytes]]] = collections.deque()
    counts: dict[str, Any] = {
        "events": 0,
        "valid": 0,
        "labels": 0,
        "positives": 0,
        "malformed": dict.fromkeys(MALFORMED_KINDS, 0),
    }
    t0 = time.monotonic()
    try:
        for frame in frames:
            payloads = encode_events(to_event_frame(frame, spec))
            keys = [str(k).encode() for k in frame[spec.entity_key]]
            kinds = [""] * len(payloads)
            bad = np.flatnonzero(rng.random(len(payloads)) < malformed_rate) if malformed_rate else []
            for i in bad:
                kind = MALFORMED_KINDS[int(rng.integers(len(MALFORMED_KINDS)))]
                payloads[i] = malform(payloads[i], kind, spec, rng, settings.scoring.max_event_bytes)
                kinds[i] = kind
                counts["malformed"][kind] += 1
            _send(producer, topics.events, payloads, keys, kinds)
            good = np.ones(len(frame), dtype=bool)
            good[bad] = False
            counts["events"] += len(payloads)
            counts["valid"] += int(good.sum())
            if spec.label and spec.label.field in frame:
                lab = frame[spec.label.field][good]
                counts["positives"] += int((lab == spec.label.positive).sum())
                msgs = _label_messages(spec, frame[spec.event_id][good], lab)
                pending.append((time.monotonic() + label_delay_s, msgs))
            while pending and pending[0][0] <= time.monotonic():
                msgs = pending.popleft()[1]
                _send(producer, topics.labels, msgs)
                counts["labels"] += len(msgs)
            if on_progress:
                on_progress(len(payloads))
            if rate:
                ahead = counts["events"] / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        while pending:  # deliver the remaining labels when they fall due
            due, msgs = pending.popleft()
            time.sleep(max(0.0, due - time.monotonic()))
            _send(producer, topics.labels, msgs)
            counts["labels"] += len(msgs)
    except (DeliveryError, KafkaError) as exc:
        raise ProduceError(
            f"sending to Kafka failed after {counts['events']} events: {str(exc).splitlines()[0]}; "
            "check that the broker is up and its topics exist (`rtml up` creates them)"
        ) from None
    finally:
        producer.close()
    counts["malformed_total"] = sum(counts["malformed"].values())
    counts["seconds"] = round(time.monotonic() - t0, 3)
    counts["events_per_s"] = round(counts["events"] / max(counts["seconds"], 1e-9), 1)
    return counts


def generated_frames(
    spec: StreamSpec, n: int, seed: int, drift_at: int | None, chunk: int, start_ms: int | None = None
) -> Iterator[pd.DataFrame]:
    if spec.event_fields != load_spec().event_fields:  # the built-in generator makes the default spec
        raise ProduceError(
            f"the built-in generator makes card transactions; spec '{spec.name}' declares other "
            f"fields: stream your own data with `rtml replay FILE`"
        )
    gen = CardTransactionGenerator(seed=seed, drift_at=drift_at, start_ms=start_ms)
    if start_ms is None:  # place the stream so that its last event is about now
        gen.start_ms = int(time.time() * 1000 - n / gen.events_per_sim_second * 1000)
    done = 0
    while done < n:
        k = min(chunk, n - done)
        yield gen.batch(k, end_ms=int(time.time() * 1000))
        done += k


def file_frames(path: Path, spec: StreamSpec, chunk: int) -> Iterator[pd.DataFrame]:
    """Frames of a CSV or Parquet file whose columns match the spec (label column optional)."""
    if not path.exists():
        raise ProduceError(f"{path}: no such file")
    if path.suffix.lower() == ".parquet":
        data = pd.read_parquet(path)
    elif path.suffix.lower() == ".csv":
        data = pd.read_csv(path)
    else:
        raise ProduceError(f"{path}: unsupported file type (use .csv or .parquet)")
    missing = [c for c in spec.event_fields if c not in data.columns]
    if missing:
        raise ProduceError(f"{path}: missing column(s) required by spec '{spec.name}': {', '.join(missing)}")
    if spec.event_time_format == "iso8601" and not pd.api.types.is_string_dtype(data[spec.event_time]):
        data[spec.event_time] = pd.to_datetime(data[spec.event_time], utc=True).dt.strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        )
    for start in range(0, len(data), chunk):
        yield data.iloc[start : start + chunk]
