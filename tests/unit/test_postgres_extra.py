"""The postgres extra: plain postgresql:// (MLflow) and postgresql+asyncpg:// (Prefect) find their drivers."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_extra_declares_psycopg3_and_asyncpg() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = [req.split(">")[0].split("=")[0] for req in extras["postgres"]]
    assert names == ["psycopg[binary]", "asyncpg"]
    assert ".[dev,postgres]" in (ROOT / "Makefile").read_text()  # make installs it


def test_uris_resolve_to_installed_drivers() -> None:
    pytest.importorskip("psycopg", reason="postgres extra not installed")
    from sqlalchemy import create_engine

    plain = create_engine("postgresql://u:p@127.0.0.1:1/mlflow")  # imports the DBAPI, no connection
    assert (plain.dialect.name, plain.dialect.driver) == ("postgresql", "psycopg")
    prefect = create_engine("postgresql+asyncpg://u:p@127.0.0.1:1/prefect")
    assert prefect.dialect.driver == "asyncpg"
    plain.dispose()
    prefect.dispose()
