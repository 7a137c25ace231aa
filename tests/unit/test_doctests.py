"""Every module's doctests, collected by installed module name (``rtml.…``), so no module is imported
twice under a second name from its source folder."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

# rtml is a namespace package (no folder of its own): its packages are listed, not discovered.
PACKAGES = ("infra", "features", "models", "expectations", "pipelines", "flows")


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        module = importlib.import_module(f"rtml.{pkg}")
        names += [m.name for m in pkgutil.walk_packages(module.__path__, f"rtml.{pkg}.") if not m.ispkg]
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"
