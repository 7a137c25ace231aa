"""Shared CLI plumbing: settings from global flags, JSON / rich output, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rtml.infra.config.settings import ConfigError, Settings, load_settings

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of rich output.")]
JsonLinesOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object per line, one line per event reported.")
]
console = Console(stderr=False)
_STDOUT = sys.stdout  # the real stdout: in --json mode only the result object goes there


def _json_mode_stdout() -> None:
    """Send everything written to fd 1 (libraries, log handlers, the JVM) to stderr; keep a private
    handle on the real stdout for the one JSON object."""
    global _STDOUT
    import os

    sys.stdout.flush()
    _STDOUT = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)


class CommandError(Exception):
    """A command failed at run time; exit code 1 with this one-line message."""


class GlobalOptions:
    def __init__(self, config: Path | None, overrides: dict[str, Any]) -> None:
        self.config = config
        self.overrides = overrides
        self._settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config, self.overrides)
        return self._settings


def settings_of(ctx: typer.Context) -> Settings:
    opts = ctx.find_object(GlobalOptions)
    return opts.settings() if opts is not None else load_settings()


def emit(
    result: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], None] | None = None
) -> None:
    if as_json:
        _STDOUT.write(json.dumps(result, default=str, sort_keys=True) + "\n")
        _STDOUT.flush()
    elif render is not None:
        render(result)
    else:
        console.print_json(json.dumps(result, default=str))


def failure_reason(state: Any) -> str:
    """One line from a failed Prefect state: the exception's own message, without Prefect's prefix."""
    import re

    text = str(state.message or "failed").splitlines()[0]
    return re.sub(r"^Flow run encountered an exception: \w+: ", "", text)[:2000]


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    console.print(t)


def _unreachable(exc: BaseException) -> bool:
    """A refused or failed connection (httpx, requests, urllib3, sockets), possibly wrapped."""
    seen = 0
    while exc is not None and seen < 10:
        if type(exc).__name__ in (
            "ConnectError",
            "ConnectionError",
            "ConnectTimeout",
            "NewConnectionError",
        ) or (isinstance(exc, ConnectionRefusedError)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1  # type: ignore[assignment]
    return False


def fail(message: str, code: int) -> None:
    from rtml.infra.app.output import log_file

    line = " ".join(message.split())
    log = log_file()
    if line and code == 1 and log is not None and log.exists() and log.stat().st_size:
        line += f" (details: {log})"
    if "--json" in sys.argv:
        _STDOUT.write(json.dumps({"ok": False, "error": line}) + "\n")
        _STDOUT.flush()
    if line:  # empty when click already printed the help text
        sys.stderr.write(f"rtml: {line}\n")
    raise SystemExit(code)


def run_app(app: typer.Typer) -> None:
    """Run the typer app; every failure becomes a one-line message and a non-zero exit."""
    try:  # typer >= 0.29 vendors click
        from typer._click import exceptions as click
    except ImportError:  # pragma: no cover - older typer uses click itself
        from click import exceptions as click  # type: ignore[no-redef]

    from rtml.infra.app.stack import StackError

    if "--json" in sys.argv:  # libraries that print (MLflow's run links) must not corrupt the JSON
        _json_mode_stdout()
    try:
        rv = app(standalone_mode=False)
    except click.UsageError as exc:
        fail(exc.format_message(), 2)
    except click.ClickException as exc:
        fail(exc.format_message(), 1)
    except ConfigError as exc:
        fail(str(exc), 2)
    except (CommandError, StackError) as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - e.g. typer's Abort: still one line
        if _unreachable(exc):
            fail(
                f"a service is unreachable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                "is `rtml up` running, or are the service URLs in your settings right?",
                1,
            )
        if type(exc).__name__ != "Abort":
            raise
        fail("aborted", 130)
    raise SystemExit(rv if isinstance(rv, int) else 0)
