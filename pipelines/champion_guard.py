"""The scoring job's view of ``@champion``: it follows only moves that carry an rtml audit record.

Each micro-batch costs one registry call (the registered model: its aliases and its audited-champion
tag, :mod:`rtml.models.lifecycle.audit`), made in the micro-batch, after Spark has fixed its offsets.
Made ahead of the micro-batch it would save ≈20 ms a batch, but events produced after an audited
promotion could then be scored by the previous champion. The record behind an audited move is
checked once per move (one more call when the champion changes). A ``@champion`` moved around rtml
-- a REST call, the MLflow UI -- raises one critical alert ``rtml.champion.unaudited`` per incident
and the job keeps serving the last audited version, unless ``promotion.allow_unaudited_moves`` lets
it follow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from rtml.infra.config.settings import Settings
from rtml.models.lifecycle.audit import ChampionState, Resolution, has_record, read_state, resolve
from rtml.models.lifecycle.registry import CHAMPION, SHADOW

log = logging.getLogger(__name__)
UNAUDITED_EVENT = "rtml.champion.unaudited"


class ChampionGuard:
    """Resolves the version to serve per micro-batch; alerts once per unaudited @champion."""

    def __init__(
        self,
        settings: Settings,
        read: Callable[[], ChampionState] | None = None,
        version_tags: Callable[[str], dict[str, str]] | None = None,
        alert: Callable[[Resolution, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._read = read or (lambda: read_state(settings))
        self._version_tags = version_tags or self._registry_tags
        self._alert = alert or self._emit
        self.version: str | None = None  # served last
        self.audited: str | None = None  # the last audited version served
        self.last: Resolution | None = None
        self._verified: set[tuple[str, str]] = set()
        self._alerted: tuple[str | None, str | None] | None = None
        self.shadow: str | None = None  # @shadow as read with the champion (same registry call)

    def _registry_tags(self, version: str) -> dict[str, str]:
        from rtml.models.lifecycle.registry import client

        return client(self.settings).get_model_version(self.settings.mlflow.model_name, version).tags or {}

    def _verify(self, version: str, move: dict[str, Any]) -> bool:
        key = (version, str(move.get("move_id")))
        if key not in self._verified:
            if not has_record(self._version_tags(version), version, move):
                return False
            self._verified.add(key)
        return True

    def resolve(self) -> str:
        """The version this micro-batch is scored with."""
        from mlflow.exceptions import MlflowException

        name = self.settings.mlflow.model_name
        try:
            state = self._read()
            self.shadow = state.aliases.get(SHADOW)
            res = resolve(
                state,
                self.settings.promotion.allow_unaudited_moves,
                int(time.time() * 1000),
                self._verify,
            )
        except MlflowException:
            if self.version is None:
                raise
            return self.version  # registry briefly unreachable: keep serving the last one
        self.last = res
        if res.status == "none":
            if self.version is None:
                raise RuntimeError(f"no @{CHAMPION} version of model '{name}': run `rtml bootstrap` first")
            return self.version  # alias removed: keep serving the last one
        if res.status == "unaudited":
            served = res.version or self.audited
            if served is None:
                raise RuntimeError(
                    f"@{CHAMPION} of model '{name}' points to v{res.alias} without an rtml audit record and "
                    f"no audited champion is known: `rtml promote {res.alias} --reason ...` records it "
                    "(or set promotion.allow_unaudited_moves: true)"
                )
            if (res.alias, res.move_id) != self._alerted:
                self._report(res, served)
        else:
            served = res.version or self.audited
            self.audited = served
            self._alerted = None
        if served is None:  # unreachable: audited/moving always name a version
            raise RuntimeError(f"no version of model '{name}' to serve")
        self.version = served
        return served

    def _report(self, res: Resolution, served: str) -> None:
        if self.settings.promotion.allow_unaudited_moves:
            log.warning("following unaudited @%s move to v%s (allowed by settings)", CHAMPION, res.alias)
            self._alerted = (res.alias, res.move_id)
            return
        log.critical(
            "@%s moved to v%s without an rtml audit record; serving audited v%s", CHAMPION, res.alias, served
        )
        try:
            self._alert(res, served)
        except Exception as exc:  # noqa: BLE001 - try again next micro-batch, never stop scoring
            log.error("alert %s not sent (%s); retrying next micro-batch", UNAUDITED_EVENT, exc)
            return
        self._alerted = (res.alias, res.move_id)

    def _emit(self, res: Resolution, served: str) -> None:
        from rtml.infra.config.clients import prefect_api
        from rtml.models.monitoring.alerts import emit_alert

        with prefect_api(self.settings):
            emit_alert(
                self.settings,
                UNAUDITED_EVENT,
                res.alias,
                {
                    "kind": "champion",
                    "alias_version": res.alias,
                    "audited_version": res.audited_version,
                    "audited_move_id": res.move_id,
                    "serving_version": served,
                    "message": f"@{CHAMPION} was moved to v{res.alias} without an rtml audit record "
                    f"(not by rtml promote/rollback/retrain/bootstrap); the scoring job keeps v{served}. "
                    f"Accept it with `rtml promote {res.alias} --reason ...` or restore with "
                    f"`rtml promote {served} --reason ...`.",
                },
                severity="critical",
            )

    def shadow_version(self) -> str | None:
        """The version to score beside the champion this micro-batch (None: no shadow, or it is the
        champion itself)."""
        return self.shadow if self.shadow and self.shadow != self.version else None

    def batch_fields(self) -> dict[str, Any]:
        """What the batch record says about the champion (where @champion pointed, and its status)."""
        res = self.last
        return {"champion_alias": res.alias if res else None, "champion_status": res.status if res else None}
