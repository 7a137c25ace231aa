"""What the Kafka source does when the log no longer holds the checkpoint's offsets.

The setting ``kafka.on_offset_reset`` chooses.

A checkpointed offset is valid while ``log start <= offset <= log end``. It is not when the topic
was deleted and recreated or the broker lost its data (the log end falls below the checkpoint:
the embedded broker keeps topics in memory) or retention removed records not yet read (the log
start rises above it). Reading on from the checkpoint would then silently skip records, so the
source applies a policy: ``fail`` (default) stops the query with a message naming topic,
partition, checkpoint offset and log end; ``earliest`` reads the log from its start; ``latest``
skips to its end. A reset is never silent: it is recorded (a JSON file per reset, picked up by the
scoring job's batch record) with how many offsets it skipped. A partition the checkpoint does not
know (the topic got more partitions) is read from its start and recorded; a partition it knows
that is gone (fewer partitions) always fails.

``skipped`` counts offsets that will never be read: after a reset to ``earliest`` of a recreated
log, those below its start (normally 0); to ``latest``, the whole log; past retention, the
offsets between the checkpoint and the new position. Records a lost log held above the
checkpoint cannot be counted by anyone: the message says so.

>>> positions, resets, new = plan({("e", 0): 80, ("e", 1): 90}, {("e", 0): 0, ("e", 1): 0},
...                               {("e", 0): 50, ("e", 1): 95}, "earliest")
>>> positions, [r.as_dict()["skipped"] for r in resets], new
({('e', 0): 0, ('e', 1): 90}, [0], [])
>>> plan({("e", 0): 80}, {("e", 0): 0}, {("e", 0): 50}, "fail")
Traceback (most recent call last):
rtml.pipelines.offset_reset.OffsetResetError: the Kafka log no longer holds the checkpoint's offsets \
(kafka.on_offset_reset: fail): e[0] checkpoint offset 80 > log end 50 (log start 0). The topic was ...
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rtml.infra.config.files import replace_file

POLICIES = ("fail", "earliest", "latest")
RECORDS_DIR = "_offset_resets"  # under the scoring job's sink root
Key = tuple[str, int]
log = logging.getLogger("rtml.kafka")


class OffsetResetError(RuntimeError):
    """The log no longer holds the checkpoint's offsets and the policy is ``fail``; one line."""


@dataclass(frozen=True)
class Reset:
    """One partition moved off its checkpoint."""

    topic: str
    partition: int
    checkpoint: int
    log_start: int
    log_end: int
    reset_to: int
    skipped: int
    cause: str  # log_end_below_checkpoint | log_start_above_checkpoint

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        cp, lo, hi = self.checkpoint, self.log_start, self.log_end
        if self.cause == "log_end_below_checkpoint":
            return f"{self.topic}[{self.partition}] checkpoint offset {cp} > log end {hi} (log start {lo})"
        return f"{self.topic}[{self.partition}] checkpoint offset {cp} < log start {lo} (log end {hi})"


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown offset reset policy {policy!r}: use one of {', '.join(POLICIES)}")
    return policy


def _reset(key: Key, cp: int, lo: int, hi: int, policy: str) -> Reset:
    to = lo if policy == "earliest" else hi
    below = cp > hi
    base = 0 if below else cp  # a recreated log is read from its offset 0; past retention, from cp
    return Reset(
        key[0],
        key[1],
        cp,
        lo,
        hi,
        to,
        max(to - base, 0),
        "log_end_below_checkpoint" if below else "log_start_above_checkpoint",
    )


def missing_message(topic: str, known: int, gone: list[int], bootstrap: str = "") -> str:
    """One line for a topic that is gone (``known == 0``) or lost partitions the checkpoint tracks."""
    on = f" on {bootstrap}" if bootstrap else ""
    if known == 0:
        return (
            f"topic '{topic}' does not exist{on}: producers never create topics; run `rtml up`, "
            "which creates rtml's topics with kafka.partitions partitions"
        )
    return (
        f"topic '{topic}' has {known} partition(s){on} but the checkpoint tracks partition(s) "
        f"{', '.join(map(str, gone))} that are gone (the topic was recreated with fewer partitions): "
        "recreate it with its former partition count, or start from a new checkpoint"
    )


def plan(
    start: dict[Key, int], log_start: dict[Key, int], log_end: dict[Key, int], policy: str
) -> tuple[dict[Key, int], list[Reset], list[Key]]:
    """Where to read each current partition from: ``(positions, resets, new partitions)``.

    ``start`` is the checkpoint; ``log_start`` / ``log_end`` what the broker holds now (true ends).
    Raises :class:`OffsetResetError` if a tracked partition is gone, or a reset is needed and the
    policy is ``fail``.
    """
    check_policy(policy)
    gone: dict[str, list[int]] = {}
    for t, p in sorted(start):
        if (t, p) not in log_end:
            gone.setdefault(t, []).append(p)
    if gone:
        t = next(iter(gone))
        raise OffsetResetError(missing_message(t, sum(1 for k in log_end if k[0] == t), gone[t]))
    positions: dict[Key, int] = {}
    resets: list[Reset] = []
    new: list[Key] = []
    for k in sorted(log_end):
        lo, hi = log_start.get(k, 0), log_end[k]
        if k not in start:
            positions[k], _ = lo, new.append(k)
        elif lo <= start[k] <= hi:
            positions[k] = start[k]
        else:
            r = _reset(k, start[k], lo, hi, policy)
            positions[k] = r.reset_to
            resets.append(r)
    if resets and policy == "fail":
        raise OffsetResetError(fail_message(resets))
    return positions, resets, new


def fail_message(resets: list[Reset]) -> str:
    return (
        "the Kafka log no longer holds the checkpoint's offsets (kafka.on_offset_reset: fail): "
        + "; ".join(r.describe() for r in resets)
        + ". The topic was deleted and recreated, the broker lost its data, or retention removed "
        "unread records; reading on would skip records silently. Set kafka.on_offset_reset to "
        "earliest (read what the log holds now) or latest (skip to its end) and restart: the skipped "
        "offsets are recorded; records a lost log held above the checkpoint cannot be counted"
    )


def trusted_ends(start: dict[Key, int], log_end: dict[Key, int], exact: set[Key]) -> dict[Key, int]:
    """Log ends to plan with: one that is not exact (ListOffsets answers short on some brokers and no
    fetch confirmed it) never proves that the log shrank below the checkpoint.

    >>> trusted_ends({("e", 0): 80, ("e", 1): 80}, {("e", 0): 50, ("e", 1): 50}, {("e", 0)})
    {('e', 0): 50, ('e', 1): 80}
    """
    return {k: max(v, start[k]) if k in start and k not in exact else v for k, v in log_end.items()}


def read_from(
    start: dict[Key, int], end: dict[Key, int], log_start: dict[Key, int], policy: str
) -> tuple[dict[Key, int], list[Reset]]:
    """Where a planned micro-batch ``[start, end)`` reads each partition from, and the resets it makes.

    Replay-safe: ``end`` below ``start`` means the log was reset when the batch was planned; a
    checkpoint below the log start means retention removed records. Both move to the policy's
    position; with ``fail`` they raise.
    """
    out: dict[Key, int] = {}
    resets: list[Reset] = []
    for k, e in sorted(end.items()):
        s = start.get(k)
        lo = log_start.get(k, 0)
        if s is None:
            out[k] = min(lo, e)  # a partition new to the checkpoint: from its start
        elif e < s or s < lo:
            r = _reset(k, s, min(lo, e), e, policy)
            if policy == "fail":
                raise OffsetResetError(fail_message([r]))
            out[k] = r.reset_to
            resets.append(r)
        else:
            out[k] = s
    return out, resets


# The record of resets ------------------------------------------------------------------------------
def record(
    directory: str | Path | None,
    start: dict[str, Any],
    policy: str,
    resets: list[Reset],
    new: list[Key],
    log_start: dict[Key, int],
) -> dict[str, Any] | None:
    """Write the resets and new partitions to ``directory``: one JSON file named after what was
    detected, so detecting it again on a replanned batch writes nothing new. The scoring job's batch
    record takes them and logs them at WARNING on the driver (:func:`for_batch`)."""
    if not resets and not new:
        return None
    entry = {
        "policy": policy,
        "resets": [r.as_dict() for r in resets],
        "new_partitions": [
            {"topic": t, "partition": p, "read_from": log_start.get((t, p), 0)} for t, p in new
        ],
        "offsets_skipped": sum(r.skipped for r in resets),
    }
    # the same detection (same checkpoint, policy and partitions) has the same id: a batch replanned
    # after a crash rewrites nothing, so a reset is counted once
    key = json.dumps(
        {"start": start, "policy": policy, "parts": sorted([(r.topic, r.partition) for r in resets] + new)},
        sort_keys=True,
    )
    entry["id"] = hashlib.sha1(key.encode()).hexdigest()[:16]
    entry["detected_at_ms"] = int(time.time() * 1000)
    if directory:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{entry['id']}.json"
        if not path.exists():
            replace_file(path, json.dumps(entry, sort_keys=True))
    return entry


def pending(directory: str | Path) -> list[dict[str, Any]]:
    """Recorded resets no micro-batch record has taken yet, oldest first."""
    d = Path(directory)
    out = [json.loads(p.read_text()) for p in d.glob("*.json")] if d.is_dir() else []
    return sorted(out, key=lambda e: (e["detected_at_ms"], e["id"]))


def for_batch(directory: str | Path, batch_record: Path) -> list[dict[str, Any]]:
    """The resets a micro-batch record holds: those recorded since the last batch, logged at WARNING
    on the driver; a replayed batch (its record exists) keeps the ones it took before."""
    held = json.loads(batch_record.read_text()).get("offset_resets", []) if batch_record.exists() else []
    ids = {h["id"] for h in held}
    new = [e for e in pending(directory) if e["id"] not in ids]
    for e in new:
        log_entry(e)
    return held + new


def log_entry(e: dict[str, Any]) -> None:
    """Log a recorded detection at WARNING: each reset with its skipped count, each new partition."""
    for r in e["resets"]:
        log.warning(
            "Kafka offset reset (kafka.on_offset_reset: %s): %s[%d] checkpoint offset %d, log %d..%d; "
            "read from %d, %d offsets skipped",
            e["policy"],
            r["topic"],
            r["partition"],
            r["checkpoint"],
            r["log_start"],
            r["log_end"],
            r["reset_to"],
            r["skipped"],
        )
    for n in e["new_partitions"]:
        log.warning(
            "Kafka partition %s[%d] is new to the checkpoint: read from offset %d",
            n["topic"],
            n["partition"],
            n["read_from"],
        )


def mark_taken(directory: str | Path, entries: list[dict[str, Any]]) -> None:
    """Move records a micro-batch record now holds out of the pending ones (kept under ``taken/``)."""
    d = Path(directory)
    (d / "taken").mkdir(parents=True, exist_ok=True)
    for e in entries:
        src = d / f"{e['id']}.json"
        if src.exists():
            src.replace(d / "taken" / src.name)
