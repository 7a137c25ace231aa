"""Two registered versions side by side, and their decision on the same holdout when there is one.

Each version's own holdout metrics are measured on the holdout of its own retrain, so two rows of
``rtml models`` are not comparable as they stand. When one version challenged the other, the
decision tags (:func:`rtml.models.training.retrain.record_decision`) hold both models' metrics on the
*same* holdout; :func:`compare_versions` returns them as ``same_holdout``.
"""

from __future__ import annotations

from typing import Any

from rtml.infra.config.settings import Settings
from rtml.models.lifecycle.aliases import list_versions

_FIELDS = ("version", "aliases", "trigger", "parent", "created_ms", "precision", "recall", "f1")


class UnknownVersion(LookupError):
    """A version the registry does not hold."""


def decision_between(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """The decision that judged one of two ``list_versions`` rows against the other, if any.

    >>> champ = {"version": "1", "comparison": None}
    >>> chall = {"version": "2", "decision": "reject", "decision_reason": "within noise",
    ...          "comparison": {"champion_version": "1", "metrics": {"f1": {"delta": 0.01}}}}
    >>> decision_between(champ, chall)["challenger"], decision_between(chall, champ)["champion"]
    ('2', '1')
    >>> decision_between(champ, {"version": "3", "comparison": None}) is None
    True
    """
    for champion, challenger in ((a, b), (b, a)):
        c = challenger.get("comparison")
        if c and str(c.get("champion_version")) == str(champion["version"]):
            return {
                "champion": champion["version"],
                "challenger": challenger["version"],
                "outcome": challenger.get("decision"),
                "reason": challenger.get("decision_reason"),
                **{k: v for k, v in c.items() if k != "champion_version"},
            }
    return None


def compare_versions(settings: Settings, a: str, b: str) -> dict[str, Any]:
    """Both versions (aliases, lineage, own-holdout metrics, last decision) and, when one challenged
    the other, that decision's metrics of both on the same holdout. UnknownVersion if one is missing."""
    rows = {r["version"]: r for r in list_versions(settings)}
    missing = [v for v in (a, b) if v not in rows]
    if missing:
        known = ", ".join(sorted(rows, key=int)) or "none"
        raise UnknownVersion(
            f"model '{settings.mlflow.model_name}' has no version {', '.join(missing)} (versions: {known})"
        )
    return {
        "model": settings.mlflow.model_name,
        "versions": [
            {**{k: rows[v].get(k) for k in _FIELDS}, "decision": rows[v].get("decision")} for v in (a, b)
        ],
        "same_holdout": decision_between(rows[a], rows[b]),
    }
