"""The champion audit: every alias move rtml makes leaves a record in the registry, and whoever serves
``@champion`` can tell an audited move from one made around rtml (a plain REST call, the MLflow UI).

Both halves live in the configured MLflow registry, so every machine sees the same audit:

- **Records**, one per move, on the version it moved to: tag ``rtml.audit.<seq>-<move id>`` = JSON
  (kind, from, to, reason, user, host, at_ms, seq, move_id); the replaced version keeps a copy with
  ``role: replaced``.
- **The audited champion**, on the registered model: tag ``rtml.champion`` = JSON
  ``{version, move_id, seq, kind, at_ms, stack, state}``. ``stack`` is the audited champions in
  order (the last is the champion; rollback pops it), ``state`` is ``moving`` while a move is under
  way (``before`` then holds the pointer it replaces) and ``done`` after.

A move (under the promotion lock) writes the record, the pointer with ``state: moving``, the alias,
then the pointer with ``state: done``. A reader seeing ``@champion`` equal to the pointer's version
(and a record carrying its move id on that version) sees an audited champion; ``@champion`` still on
the version before a move that started less than :data:`IN_FLIGHT_S` ago is a move in flight;
anything else is an unaudited move.

>>> normalise_version(" 02 "), normalise_version("v3")
('2', '3')
>>> next_stack(["1", "2"], "3", rollback=False), next_stack(["1", "2", "3"], "2", rollback=True)
(['1', '2', '3'], ['1', '2'])
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from rtml.infra.config.settings import Settings

POINTER_TAG = "rtml.champion"
AUDIT_PREFIX = "rtml.audit."
STACK_DEPTH = 100  # audited champions kept for rollback
IN_FLIGHT_S = 120  # a move whose alias write has not landed after this long is not "in flight" any more


class LifecycleError(Exception):
    """A promotion/rollback request that cannot be carried out; one-line reason."""


class ChampionMoved(LifecycleError):
    """@champion is not where the caller expected it (``move_champion(if_champion_is=...)``)."""


def normalise_version(raw: Any) -> str:
    """A registry version as MLflow numbers it: ``02`` -> ``2``, spaces and a leading ``v`` dropped.

    >>> normalise_version("2 x")
    Traceback (most recent call last):
    ...
    rtml.models.lifecycle.audit.LifecycleError: version must be a whole number like 3, got '2 x'
    """
    text = str(raw).strip()
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not re.fullmatch(r"[0-9]{1,18}", digits) or int(digits) == 0:
        raise LifecycleError(f"version must be a whole number like 3, got {str(raw)!r}")
    return str(int(digits))


def audit_key(seq: int, move_id: str) -> str:
    return f"{AUDIT_PREFIX}{seq:010d}-{move_id}"


def next_stack(stack: list[str], target: str, rollback: bool) -> list[str]:
    """The audited-champion stack after a move to ``target`` (a rollback pops the top)."""
    if rollback:
        return stack[:-1]
    if stack and stack[-1] == target:
        return list(stack)  # re-affirming the champion (e.g. after an unaudited move) is not a step
    return [*stack, target][-STACK_DEPTH:]


def rollback_target(committed: dict[str, Any] | None) -> str:
    """The version a rollback goes to: the audited champion before the current one."""
    stack = list((committed or {}).get("stack") or [])
    if not stack:
        raise LifecycleError("no audited champion to roll back from: promote a version first")
    if len(stack) < 2:
        raise LifecycleError(f"nothing to roll back to: v{stack[-1]} is the first audited champion")
    return stack[-2]


@dataclass(frozen=True)
class ChampionState:
    """Aliases and the audited-champion pointer of the registered model, as read in one call."""

    aliases: dict[str, str] = field(default_factory=dict)
    pointer: dict[str, Any] | None = None

    @property
    def alias(self) -> str | None:
        from rtml.models.lifecycle.registry import CHAMPION

        return self.aliases.get(CHAMPION)

    def committed(self) -> dict[str, Any] | None:
        """The last audited move that took effect (a move in flight counts once its alias landed)."""
        p = self.pointer
        if p is None or p.get("state") != "moving" or self.alias == p.get("version"):
            return p
        return p.get("before")

    def status(self, now_ms: int) -> str:
        """``none`` (no @champion), ``audited``, ``moving`` (a move in flight) or ``unaudited``.

        >>> p = {"version": "2", "move_id": "m2", "seq": 2, "state": "done", "stack": ["1", "2"]}
        >>> ChampionState({"champion": "2"}, p).status(0), ChampionState({"champion": "1"}, p).status(0)
        ('audited', 'unaudited')
        >>> moving = {**p, "state": "moving", "at_ms": 0, "before": {"version": "1", "move_id": "m1"}}
        >>> back = ChampionState({"champion": "1"}, moving)
        >>> back.status(1000), back.status(10**9)  # in flight, then stale: nobody finished the move
        ('moving', 'unaudited')
        """
        if self.alias is None:
            return "none"
        p = self.pointer
        if p is None:
            return "unaudited"
        if self.alias == p.get("version"):
            return "audited"
        before = p.get("before") or {}
        if (
            p.get("state") == "moving"
            and self.alias == before.get("version")
            and now_ms - int(p.get("at_ms", 0)) < IN_FLIGHT_S * 1000
        ):
            return "moving"
        return "unaudited"


def read_state(settings: Settings) -> ChampionState:
    """One registry call: the registered model's aliases and its ``rtml.champion`` tag.

    A model that does not exist yet reads as no aliases and no pointer.
    """
    from mlflow.exceptions import MlflowException

    from rtml.models.lifecycle.registry import client

    try:
        rm = client(settings).get_registered_model(settings.mlflow.model_name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return ChampionState()
        raise
    raw = (rm.tags or {}).get(POINTER_TAG)
    pointer = None
    if raw:
        try:
            pointer = json.loads(raw)
        except ValueError:
            pointer = None  # a hand-written tag that is not ours: no audited champion
    aliases = {str(k): str(v) for k, v in (rm.aliases or {}).items()}
    return ChampionState(aliases, pointer if isinstance(pointer, dict) else None)


def has_record(tags: dict[str, str], version: str, move: dict[str, Any]) -> bool:
    """Whether a version's tags hold rtml's record of ``move`` (the pointer entry) moving to it."""
    try:
        raw = tags.get(audit_key(int(move["seq"]), str(move["move_id"])))
        record = json.loads(raw) if raw else None
    except (KeyError, TypeError, ValueError):
        return False
    return bool(record) and record.get("to") == version and record.get("move_id") == move["move_id"]


@dataclass(frozen=True)
class Resolution:
    """Which version to serve and why (the scoring job and the retrain flow use the same rule)."""

    version: str | None  # what to serve; None: nothing audited to serve
    status: str  # audited | moving | unaudited | none
    alias: str | None  # where @champion points
    audited_version: str | None  # the last audited champion (verified against its record)
    move_id: str | None


def resolve(state: ChampionState, allow_unaudited: bool, now_ms: int, verified: Any) -> Resolution:
    """Serve @champion when its move is audited (or allowed), else the last audited champion.

    ``verified(version, move) -> bool`` checks that the version holds the move's record.

    >>> p = {"version": "2", "move_id": "m2", "seq": 2, "state": "done", "stack": ["1", "2"]}
    >>> yes = lambda v, m: True
    >>> resolve(ChampionState({"champion": "9"}, p), False, 0, yes).version
    '2'
    >>> resolve(ChampionState({"champion": "9"}, p), True, 0, yes).version
    '9'
    >>> resolve(ChampionState({"champion": "2"}, p), False, 0, lambda v, m: False).status
    'unaudited'
    """
    status = state.status(now_ms)
    if status == "none":
        return Resolution(None, status, None, None, None)
    committed = state.committed()
    ok = committed is not None and verified(str(committed.get("version")), committed)
    audited = str(committed["version"]) if ok and committed else None
    move_id = committed.get("move_id") if ok and committed else None
    if status in ("audited", "moving") and not ok:
        status = "unaudited"  # a pointer without its record: not written by rtml
    if status != "unaudited" or allow_unaudited:
        return Resolution(state.alias, status, state.alias, audited, move_id)
    return Resolution(audited, status, state.alias, audited, move_id)


def served_champion(settings: Settings) -> Resolution:
    """The version the scoring job serves now (same rule, verified against the registry's records)."""
    import time

    from rtml.models.lifecycle.registry import client

    def verified(version: str, move: dict[str, Any]) -> bool:
        mv = client(settings).get_model_version(settings.mlflow.model_name, version)
        return has_record(mv.tags or {}, version, move)

    allow = settings.promotion.allow_unaudited_moves
    return resolve(read_state(settings), allow, int(time.time() * 1000), verified)


def history(settings: Settings, limit: int | None = None) -> list[dict[str, Any]]:
    """Champion moves (one record each, from the versions' audit tags), newest first."""
    from rtml.models.lifecycle.registry import client

    c = client(settings)
    name = settings.mlflow.model_name
    records: dict[str, dict[str, Any]] = {}
    token = None
    while True:
        page = c.search_model_versions(f"name='{name}'", max_results=200, page_token=token)
        for mv in page:
            for key, raw in (mv.tags or {}).items():
                if not key.startswith(AUDIT_PREFIX):
                    continue
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if rec.get("role") == "replaced":
                    continue
                records[rec.get("move_id") or key] = rec
        token = getattr(page, "token", None)
        if not token:
            break
    out = sorted(records.values(), key=lambda r: (int(r.get("seq", 0)), int(r.get("at_ms", 0))), reverse=True)
    return out[:limit] if limit else out
