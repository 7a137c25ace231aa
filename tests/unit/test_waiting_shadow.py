"""Which undecided @shadow a retrain keeps for a later round (``flows.evidence._waiting``, pure logic
on a stand-in evidence): kept inside ``drift.performance_window``, replaced with a warning past it,
never kept when it cannot be promoted or when its evidence decided."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest
from prefect.logging import disable_run_logger

from rtml.flows import evidence as evidence_module
from rtml.flows.evidence import _waiting
from rtml.infra.config.settings import load_settings

HOUR_MS = 3_600_000


def evidence(shadowed_hours_ago: float, outcome: str = "no_decision", **kw: object) -> SimpleNamespace:
    live = SimpleNamespace(outcome=outcome, reason="live evidence: 12 labelled events, 200 needed")
    fields = {
        "version": "3",
        "live": live,
        "mode": "shadow",
        "holdout_verdict": "reject",
        "holdout_against": "1",
        "shadowed_at_ms": int(time.time() * 1000 - shadowed_hours_ago * HOUR_MS),
    }
    return SimpleNamespace(**(fields | kw))


@pytest.fixture
def settings(tmp_path):  # noqa: ANN001, ANN201
    return load_settings(
        use_default_file=False, overrides={"state_dir": str(tmp_path), "drift": {"performance_window": "24h"}}
    )


def test_an_undecided_shadow_inside_the_window_is_kept(settings) -> None:  # noqa: ANN001
    with disable_run_logger():
        assert _waiting(settings, evidence(2), champion="1") == "3"


def test_past_the_window_it_is_replaced_with_a_warning_that_says_why(settings, caplog, monkeypatch) -> None:  # noqa: ANN001
    # the flow's run logger, as a plain logger the test reads (outside a flow run it has no context)
    monkeypatch.setattr(evidence_module, "get_run_logger", lambda: logging.getLogger("rtml.test.waiting"))
    with caplog.at_level(logging.WARNING, logger="rtml.test.waiting"):
        assert _waiting(settings, evidence(25), champion="1") is None
    assert "v3 undecided for longer than drift.performance_window (24h)" in caplog.text
    assert "12 labelled events" in caplog.text and "replaced" in caplog.text


def test_a_shadow_that_decided_or_cannot_be_promoted_is_not_kept(settings) -> None:  # noqa: ANN001
    with disable_run_logger():
        assert _waiting(settings, evidence(2, outcome="reject"), champion="1") is None
        assert _waiting(settings, evidence(2, version=None), champion="1") is None
        # under ``both`` only a shadow whose own holdout verdict promotes against this champion waits
        assert _waiting(settings, evidence(2, mode="both"), champion="1") is None
        both = evidence(2, mode="both", holdout_verdict="promote", holdout_against="1")
        assert _waiting(settings, both, champion="1") == "3"
        assert _waiting(settings, both, champion="4") is None  # judged against another champion
