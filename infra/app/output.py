"""The CLI owns its output: stdout carries results, stderr rtml's progress and problems, and what the
libraries say (MLflow, Prefect, Great Expectations, py4j, Kafka clients, Python warnings) goes to
``<state_dir>/logs/cli.log``.

:func:`configure` runs first in ``main()``, before any of those libraries is imported: it sets the
libraries' own switches (MLflow's run links and progress bars off; MLflow leaves logging to us) and puts
two handlers on the root logger: the console (stderr) and a buffer that :func:`log_to_file` empties
into the log file once the settings say where the state directory is. Prefect sees a root logger
that is already configured and leaves it alone; its flow and task run logs still go to its API, so the
Prefect UI keeps them.

On the console, by default: rtml's own loggers from WARNING, everything else only CRITICAL (a failed
command says so in one line naming the log file, where the libraries' errors and tracebacks are).
``-v/--verbose`` shows INFO and above from every logger.

>>> import logging
>>> console = ConsoleLogHandler(verbose=False)
>>> record = lambda name, level: logging.LogRecord(name, level, __file__, 1, "m", None, None)
>>> console.filter(record("rtml.pipelines.scoring", logging.WARNING))
True
>>> console.filter(record("mlflow.models", logging.WARNING))
False
>>> console.filter(record("prefect.task_runs", logging.ERROR))
False
>>> console.filter(record("py4j", logging.CRITICAL))
True
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LIBRARY_ENV = {
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # no "View run ... at: http://..." lines
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # no tqdm "Downloading artifacts" bars
    "MLFLOW_CONFIGURE_LOGGING": "false",  # MLflow's records reach the root logger, i.e. ours
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",  # Prefect's own console handler, where it has one
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
}
_BUFFER_LIMIT = 20_000


class ConsoleLogHandler(logging.StreamHandler):
    """stderr: rtml's loggers from WARNING, libraries' only CRITICAL (rtml reports a failed operation
    itself, in one line that points at the log); with verbose, all from INFO."""

    def __init__(self, verbose: bool = False) -> None:
        import sys

        super().__init__(sys.stderr)
        self.verbose = verbose
        self.setFormatter(logging.Formatter("rtml: %(levelname)s %(name)s: %(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        if self.verbose:
            return record.levelno >= logging.INFO
        own = record.name == "rtml" or record.name.startswith("rtml.")
        return record.levelno >= (logging.WARNING if own else logging.CRITICAL)


class BufferLogHandler(logging.Handler):
    """Keeps records (up to a bound) until the log file is known; then hands them over."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < _BUFFER_LIMIT:
            self.records.append(record)


def configure(verbose: bool = False) -> None:
    """Set the libraries' switches and the root logger's handlers; call before importing them.

    Explicit environment settings win (``setdefault``), so a user can still turn a library back on.
    """
    for key, value in LIBRARY_ENV.items():
        os.environ.setdefault(key, value)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, ConsoleLogHandler | BufferLogHandler | logging.FileHandler):
            root.removeHandler(handler)
    root.setLevel(logging.INFO)
    root.addHandler(ConsoleLogHandler(verbose))
    root.addHandler(BufferLogHandler())
    logging.captureWarnings(True)  # Python warnings become records of the "py.warnings" logger
    _when_imported("mlflow.utils.logging_utils", _mlflow_prints_to_log)
    for noisy in ("py4j", "py4j.clientserver", "kafka", "urllib3", "httpx", "alembic", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)


_LOG_FILE: list[Path] = []


def log_file() -> Path | None:
    """Where this process's log goes, once :func:`log_to_file` has set it."""
    return _LOG_FILE[-1] if _LOG_FILE else None


def log_to_file(path: Path) -> Path | None:
    """Send everything logged (and what was buffered so far) to ``path``; None if it cannot be written."""
    root = logging.getLogger()
    buffers = [h for h in root.handlers if isinstance(h, BufferLogHandler)]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        return None
    file_handler.setLevel(logging.INFO)
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    for buffer in buffers:
        for record in buffer.records:
            file_handler.handle(record)
        root.removeHandler(buffer)
    root.addHandler(file_handler)
    _LOG_FILE.append(path)
    return path


class _PrintsToLog:
    """A stream whose lines become INFO records of a logger (for libraries that print)."""

    def __init__(self, logger: str) -> None:
        self.logger = logging.getLogger(logger)

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self.logger.info(line)
        return len(text)

    def flush(self) -> None:
        pass


def _mlflow_prints_to_log(module: Any) -> None:
    """MLflow's ``eprint`` ("Successfully registered model ...", "Created version ...") writes to the
    module's stream object at call time: send that stream to the log instead of the terminal."""
    module.MLFLOW_LOGGING_STREAM.write = _PrintsToLog("mlflow").write


def _when_imported(name: str, then: Callable[[Any], None]) -> None:
    """Run ``then(module)`` right after module ``name`` is first executed (now, if it already was)."""
    if name in sys.modules:
        then(sys.modules[name])
        return

    class Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            if spec is None or spec.loader is None:
                return spec
            execute = spec.loader.exec_module

            def exec_module(module: Any) -> None:
                execute(module)
                then(module)

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, Hook())
