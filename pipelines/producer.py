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


def _label_messages(spec: StreamSpec, ids: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """The labels topic's records: ``{"<event_id>": ..., "<label field>": ..., "labelled_at_ms": <now>}``."""
    assert spec.label is not None
    lab = pd.DataFrame({spec.event_id: ids, spec.label.field: labels})
    lab["labelled_at_ms"] = int(time.time() * 1000)
    return encode_events(lab)


class LabelQueue:
    """Labels waiting to follow their events: due after ``delay_s`` seconds and after ``delay_events``
    more events went out (both, when both are set). Kept as arrays per frame, released as prefixes,
    stamped ``labelled_at_ms`` when sent.

    >>> q = LabelQueue(delay_s=0, delay_events=2)
    >>> q.add(np.array(["e0", "e1", "e2"]), np.array([0, 1, 0]), first_index=0)
    >>> [len(ids) for ids, _ in q.due(sent=3)]   # e0 is due after event 2 (0 + 2) went out
    [1]
    >>> [ids.tolist() for ids, _ in q.drain()]
    [['e1', 'e2']]
    """

    def __init__(self, delay_s: float = 0.0, delay_events: int = 0) -> None:
        self.delay_s, self.delay_events = delay_s, delay_events
        self._items: collections.deque[tuple[float, np.ndarray, np.ndarray, np.ndarray]] = collections.deque()

    def add(
        self, ids: np.ndarray, labels: np.ndarray, first_index: int, positions: np.ndarray | None = None
    ) -> None:
        """Queue the labels of events sent at ``first_index + positions`` (default: consecutive)."""
        if not len(ids):
            return
        pos = np.arange(len(ids)) if positions is None else positions
        due_after = first_index + pos + self.delay_events + 1  # events out before the label may go
        self._items.append((time.monotonic() + self.delay_s, due_after, ids, labels))

    def next_wait(self) -> float | None:
        """Seconds until the oldest item is due by time (None when empty)."""
        return max(0.0, self._items[0][0] - time.monotonic()) if self._items else None

    def due(self, sent: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Pop what is due now that ``sent`` events went out."""
        while self._items and self._items[0][0] <= time.monotonic():
            t, due_after, ids, labels = self._items[0]
            k = int(np.searchsorted(due_after, sent, side="right"))
            if k == 0:
                return
            self._items.popleft()
            if k < len(ids):
                self._items.appendleft((t, due_after[k:], ids[k:], labels[k:]))
            yield ids[:k], labels[:k]

    def drain(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Everything left once the stream ended (waiting for the time delay, not for events)."""
        while self._items:
            t, _, ids, labels = self._items.popleft()
            time.sleep(max(0.0, t - time.monotonic()))
            yield ids, labels


def _slices(frames: Iterator[pd.DataFrame], size: int) -> Iterator[pd.DataFrame]:
    for frame in frames:
        for start in range(0, len(frame), size):
            yield frame.iloc[start : start + size]


def label_slice(delay_events: int) -> int:
    """Events sent per slice when labels lag by events: a label goes out after the slice holding the
    event ``delay_events`` later, so it lags by ``delay_events`` up to one slice more (≤ 10 %, at least 50).

    >>> label_slice(1000), label_slice(10), label_slice(10**6)
    (100, 50, 5000)
    """
    return max(50, min(5000, delay_events // 10))


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
    label_delay_events: int = 0,
) -> dict[str, Any]:
    """Send each frame's events; each label follows its event after ``label_delay_s`` seconds and
    ``label_delay_events`` more events (see :class:`LabelQueue`). Returns counts."""
    if not 0 <= malformed_rate < 1:
        raise ProduceError(f"malformed rate must be in [0, 1), got {malformed_rate}")
    if label_delay_events < 0 or label_delay_s < 0:
        raise ProduceError("label delays must be >= 0")
    if label_delay_events:
        frames = _slices(frames, label_slice(label_delay_events))
    topics = settings.kafka.topics
    try:  # bounded: bad SASL/TLS settings or a missing topic fail here, in seconds
        check_topics(settings, [topics.events, topics.labels])
    except KafkaConnectError as exc:
        raise ProduceError(str(exc)) from None
    producer = make_bulk_producer(connection_options(settings), settings.kafka.io_client)
    rng = np.random.default_rng(seed + 99)
    pending = LabelQueue(label_delay_s, label_delay_events)
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
                lab = frame[spec.label.field].to_numpy()[good]
                counts["positives"] += int((lab == spec.label.positive).sum())
                ids = frame[spec.event_id].to_numpy()[good]
                pending.add(ids, lab, counts["events"] - len(payloads), np.flatnonzero(good))
            for ids, lab in pending.due(counts["events"]):
                _send(producer, topics.labels, _label_messages(spec, ids, lab))
                counts["labels"] += len(ids)
            if on_progress:
                on_progress(len(payloads))
            if rate:
                ahead = counts["events"] / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        for ids, lab in pending.drain():  # the rest once due (the stream's last events: at its end)
            _send(producer, topics.labels, _label_messages(spec, ids, lab))
            counts["labels"] += len(ids)
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
    times = data[spec.event_time]
    if spec.event_time_format == "iso8601" and not pd.api.types.is_string_dtype(times):
        data[spec.event_time] = pd.to_datetime(times, utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    elif spec.event_time_format != "iso8601" and not pd.api.types.is_numeric_dtype(times):
        try:  # timestamps in a file for a spec that wants epoch numbers: convert, do not send strings
            ms = pd.to_datetime(times, utc=True, format="ISO8601").astype("int64") // 1_000_000
        except (ValueError, TypeError) as exc:
            raise ProduceError(
                f"{path}: column {spec.event_time!r} is neither numbers nor timestamps ({exc})"
            ) from None
        data[spec.event_time] = ms if spec.event_time_format == "epoch_ms" else ms / 1000
    for start in range(0, len(data), chunk):
        yield data.iloc[start : start + chunk]
