"""The CLI's one live display: step lines, progress bars and spinners, all on stderr (stdout carries
only results). Silent when ``quiet`` (``--json``); on a stream that is not a terminal, bars and
spinners draw nothing and step lines are plain text.

>>> shown = Display(quiet=True)
>>> with shown.bar("producing", total=10) as bar:
...     bar.advance(4)
...     bar.update(10)
>>> with shown.busy("retraining"):
...     pass
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class Bar:
    """One progress bar: ``advance(n)`` adds, ``update(done)`` sets how much is done."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, done: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done)


class Display:
    def __init__(self, quiet: bool = False, prefix: str = "") -> None:
        from rich.console import Console

        self.quiet = quiet
        self.prefix = prefix
        self.console = Console(stderr=True)

    def say(self, text: str) -> None:
        """A step line."""
        if not self.quiet:
            self.console.print(f"[bold cyan]{self.prefix}[/] {text}" if self.prefix else text)

    @contextlib.contextmanager
    def bar(self, description: str, total: int | None) -> Iterator[Bar]:
        """A progress bar for the block; gone when the block ends."""
        if self.quiet or not self.console.is_terminal:  # a bar only where it can be redrawn in place
            yield Bar()
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=True) as progress:
            yield Bar(progress, progress.add_task(description, total=total))

    @contextlib.contextmanager
    def busy(self, text: str) -> Iterator[None]:
        """A spinner with ``text`` while the block runs."""
        if self.quiet or not self.console.is_terminal:
            yield
            return
        with self.console.status(text):
            yield
