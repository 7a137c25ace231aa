"""Champion audit logic (pure): version normalisation, the rollback stack, move status, what the
scoring job serves and when it alerts. The registry and Prefect parts are tested for real in
tests/integration/test_champion_audit.py."""

from __future__ import annotations

import pytest

from rtml.infra.config.settings import load_settings
from rtml.models.lifecycle.audit import (
    ChampionState,
    LifecycleError,
    has_record,
    next_stack,
    normalise_version,
    resolve,
    rollback_target,
)
from rtml.pipelines.champion_guard import ChampionGuard


@pytest.mark.parametrize(("raw", "want"), [("2", "2"), ("02", "2"), (" 2 ", "2"), ("v3", "3"), (7, "7")])
def test_versions_are_normalised(raw: object, want: str) -> None:
    assert normalise_version(raw) == want


@pytest.mark.parametrize("raw", ["", " ", "0", "00", "-1", "2.0", "2 x", "abc", "v", "1e3", "٣"])
def test_bad_versions_are_refused_in_one_line(raw: str) -> None:
    with pytest.raises(LifecycleError, match="version must be a whole number like 3") as exc:
        normalise_version(raw)
    assert "\n" not in str(exc.value)


def test_rollback_steps_back_through_the_stack_not_toggling() -> None:
    stack: list[str] = []
    for v in ("1", "2", "3"):
        stack = next_stack(stack, v, rollback=False)
    assert stack == ["1", "2", "3"]
    seen = []
    for _ in range(2):
        target = rollback_target({"stack": stack})
        stack = next_stack(stack, target, rollback=True)
        seen.append(stack[-1])
    assert seen == ["2", "1"]
    with pytest.raises(LifecycleError, match="nothing to roll back to: v1"):
        rollback_target({"stack": stack})
    with pytest.raises(LifecycleError, match="no audited champion"):
        rollback_target(None)
    assert next_stack(["1", "2"], "2", rollback=False) == ["1", "2"]  # re-affirming is not a step
    assert len(next_stack([str(i) for i in range(1, 101)], "101", rollback=False)) == 100


def _pointer(version: str, seq: int, state: str = "done", **kw: object) -> dict:
    return {"version": version, "move_id": f"m{seq}", "seq": seq, "state": state, "at_ms": 1000, **kw}


def test_status_and_committed_pointer() -> None:
    done = _pointer("2", 2, stack=["1", "2"])
    assert ChampionState({}, done).status(0) == "none"
    assert ChampionState({"champion": "2"}, None).status(0) == "unaudited"
    assert ChampionState({"champion": "2"}, done).committed() == done
    moving = _pointer("3", 3, "moving", before=done)
    landed = ChampionState({"champion": "3"}, moving)
    assert landed.status(2000) == "audited" and landed.committed() == moving
    pending = ChampionState({"champion": "2"}, moving)
    assert pending.status(2000) == "moving" and pending.committed() == done
    assert pending.status(1000 + 121_000) == "unaudited"  # nobody finished it: not in flight any more
    assert ChampionState({"champion": "9"}, moving).status(2000) == "unaudited"


def test_has_record_needs_the_moves_record_on_that_version() -> None:
    import json

    move = _pointer("2", 2)
    tags = {"rtml.audit.0000000002-m2": json.dumps({"to": "2", "move_id": "m2"})}
    assert has_record(tags, "2", move)
    assert not has_record(tags, "3", move)
    assert not has_record({}, "2", move)
    assert not has_record({"rtml.audit.0000000002-m2": "not json"}, "2", move)


def test_resolve_serves_the_last_audited_version_unless_allowed() -> None:
    state = ChampionState({"champion": "9"}, _pointer("2", 2))
    yes = lambda v, m: True  # noqa: E731
    r = resolve(state, False, 0, yes)
    assert (r.version, r.status, r.alias, r.audited_version, r.move_id) == ("2", "unaudited", "9", "2", "m2")
    assert resolve(state, True, 0, yes).version == "9"
    forged = ChampionState({"champion": "2"}, _pointer("2", 2))
    r = resolve(forged, False, 0, lambda v, m: False)  # a pointer without rtml's record
    assert (r.version, r.status) == (None, "unaudited")


class _Registry:
    """In-memory stand-in for the two registry reads of the guard (pure-logic test only)."""

    def __init__(self) -> None:
        self.state = ChampionState({"champion": "1"}, _pointer("1", 1, stack=["1"]))
        self.reads = 0
        self.tag_reads = 0

    def read(self) -> ChampionState:
        self.reads += 1
        return self.state

    def tags(self, version: str) -> dict[str, str]:
        import json

        self.tag_reads += 1
        p = self.state.pointer or {}
        return {
            f"rtml.audit.{p['seq']:010d}-{p['move_id']}": json.dumps({"to": version, "move_id": p["move_id"]})
        }


def test_guard_alerts_once_keeps_the_audited_version_and_follows_audited_moves() -> None:
    reg, alerts = _Registry(), []
    guard = ChampionGuard(
        load_settings(use_default_file=False), reg.read, reg.tags, lambda r, s: alerts.append((r.alias, s))
    )
    assert guard.resolve() == "1" and guard.resolve() == "1"
    assert reg.reads == 2 and reg.tag_reads == 1  # one registry call per batch; the record checked once
    reg.state = ChampionState({"champion": "5"}, reg.state.pointer)  # REST move
    assert [guard.resolve() for _ in range(3)] == ["1", "1", "1"]
    assert alerts == [("5", "1")] and guard.batch_fields() == {
        "champion_alias": "5",
        "champion_status": "unaudited",
    }
    reg.state = ChampionState({"champion": "5"}, _pointer("5", 2, stack=["1", "5"]))  # rtml promote 5
    assert guard.resolve() == "5" and guard.batch_fields()["champion_status"] == "audited"
    reg.state = ChampionState({"champion": "6"}, reg.state.pointer)  # a second incident alerts again
    assert guard.resolve() == "5" and alerts[-1] == ("6", "5")


def test_guard_retries_a_failed_alert_and_never_stops_scoring() -> None:
    reg, calls = _Registry(), []

    def flaky(res: object, served: str) -> None:
        calls.append(served)
        if len(calls) == 1:
            raise ConnectionError("prefect down")

    guard = ChampionGuard(load_settings(use_default_file=False), reg.read, reg.tags, flaky)
    guard.resolve()
    reg.state = ChampionState({"champion": "5"}, reg.state.pointer)
    assert guard.resolve() == "1" and guard.resolve() == "1" and guard.resolve() == "1"
    assert calls == ["1", "1"]  # failed once, sent on the next batch, then quiet


def test_guard_follows_when_allowed_and_refuses_to_start_on_nothing_audited() -> None:
    reg, alerts = _Registry(), []
    allow = load_settings(use_default_file=False, overrides={"promotion": {"allow_unaudited_moves": True}})
    guard = ChampionGuard(allow, reg.read, reg.tags, lambda r, s: alerts.append(r))
    reg.state = ChampionState({"champion": "5"}, reg.state.pointer)
    assert guard.resolve() == "5" and alerts == []
    strict = ChampionGuard(load_settings(use_default_file=False), reg.read, reg.tags, lambda r, s: None)
    reg.state = ChampionState({"champion": "5"}, None)
    with pytest.raises(RuntimeError, match="v5 without an rtml audit record"):
        strict.resolve()
