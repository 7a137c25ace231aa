"""Run profiles: the cluster profile's sizing, and the endpoints a running profile recorded.

``rtml up --profile cluster`` starts its servers on free ports and writes the endpoints to
``<state_dir>/run/profile.json``. Later commands with the same state dir read that file as the
lowest-precedence settings source (above the defaults, below the YAML file, environment and flags):
an endpoint you configure yourself always wins. ``rtml down`` removes the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rtml.infra.config.files import replace_file

PROFILES = ("local", "cluster")


class ClusterSettings(BaseModel):
    """Sizing of the cluster profile's Spark standalone workers (all on this machine)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    workers: int = Field(default=2, ge=1, le=16, description="Spark standalone workers.")
    cores: int = Field(default=1, ge=1, description="Cores each worker offers.")
    memory: str = Field(
        default="1536m", pattern=r"^\d+[mMgG]$", description="Memory each worker offers (e.g. 1536m, 2g)."
    )
    start_timeout_s: float = Field(default=240.0, gt=0, description="Seconds to wait for every server.")


def profile_file(state_dir: Path) -> Path:
    return state_dir / "run" / "profile.json"


def read_profile(state_dir: Path) -> dict[str, Any] | None:
    """The running profile's record ({"profile", "settings", ...}), or None."""
    path = profile_file(state_dir)
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_profile(state_dir: Path, record: dict[str, Any]) -> None:
    # private: it may hold storage credentials
    replace_file(profile_file(state_dir), json.dumps(record, indent=2, sort_keys=True), private=True)


def remove_profile(state_dir: Path) -> None:
    profile_file(state_dir).unlink(missing_ok=True)


def merged_under(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    """``high`` over ``low``, nested mappings merged key by key.

    >>> merged_under({"spark": {"master": "spark://a", "conf": {}}}, {"spark": {"conf": {"x": "1"}}})
    {'spark': {'master': 'spark://a', 'conf': {'x': '1'}}}
    """
    out = dict(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged_under(out[key], value)
        else:
            out[key] = value
    return out
