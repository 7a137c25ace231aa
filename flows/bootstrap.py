"""`rtml bootstrap`: the first champion, trained on labelled history from a file or the generator.

The work is in :func:`rtml.models.training.bootstrap.bootstrap`; history comes from
:func:`rtml.pipelines.history.history_frame`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rtml.infra.config.settings import Settings
from rtml.infra.config.spec import StreamSpec
from rtml.models.training import bootstrap as training
from rtml.pipelines.history import history_frame


def bootstrap(
    settings: Settings,
    spec: StreamSpec,
    n: int = 50_000,
    seed: int = 7,
    from_file: Path | None = None,
    force: bool = False,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """Train, register and alias the first champion (skipped if a champion exists, unless force).
    Generated history is placed relative to ``now_ms`` (default the clock)."""
    return training.bootstrap(
        settings, spec, lambda: history_frame(spec, n, seed, from_file, now_ms), seed=seed, force=force
    )
