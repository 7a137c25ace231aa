"""Session fixtures: an isolated state dir and a real local stack on free ports.

Never touches the developer's .rtml/: every path and port here is private to the test session.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="rtml-tests-"))
# Before anything imports prefect/mlflow: private homes, no progress bars, no telemetry.
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect-client")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
for _k in [k for k in os.environ if k.startswith("RTML_")]:
    del os.environ[_k]

from tests.helpers import free_port  # noqa: E402


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_HOME


@pytest.fixture(scope="session")
def stack(session_dir: Path) -> Iterator:
    """A running local stack (broker, MLflow, Prefect) for the whole test session; yields Settings."""
    from rtml.infra.app import stack as stack_mod
    from rtml.infra.config.settings import load_settings

    settings = load_settings(
        use_default_file=False,
        overrides={
            "state_dir": session_dir / "stack",
            "ports": {"kafka": free_port(), "mlflow": free_port(), "prefect": free_port()},
        },
    )
    stack_mod.up(settings, timeout_s=120)
    try:
        yield settings
    finally:
        stack_mod.down(settings)


@pytest.fixture(scope="session")
def pg_state_url() -> Iterator[str]:
    """A private PostgreSQL server (127.0.0.1, a free port) with a database for the postgres entity
    state store; its postgresql:// URL."""
    from rtml.infra.app.postgres import INSTALL_HINT, pg_bin, start_postgres, stop_postgres

    if pg_bin() is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    pg = start_postgres(free_port(), ("rtml_state",))
    try:
        yield f"postgresql://postgres:{pg['password']}@127.0.0.1:{pg['port']}/rtml_state"
    finally:
        stop_postgres(pg["pid"], pg["base"])
