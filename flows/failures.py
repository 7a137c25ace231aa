"""Expected failures fail a flow run with one line, not with tracebacks.

A failed data-quality check is an outcome, not a bug: the flow run must fail (the UI shows it red,
the state message names the failed expectations), but Prefect's engine logs the exception twice with
its traceback -- "Encountered exception during execution" and "Engine execution exited with unexpected
exception" -- which buries the one line an operator needs in ``rtml serve``'s output and the run's
logs. Exceptions with a true ``one_line`` attribute are such outcomes: the filter keeps the first
record that carries one, without its traceback, and drops the records that repeat it.

>>> import logging
>>> class Outcome(RuntimeError):
...     one_line = True
>>> def record(exc, msg="Encountered exception during execution: %r"):
...     r = logging.LogRecord("prefect.flow_runs", logging.ERROR, "", 0, msg, (exc,), None)
...     r.exc_info = (type(exc), exc, None)
...     return r
>>> f, outcome = OneLineFailures(), Outcome("raw_events: expect_unique(id)")
>>> first = record(outcome)
>>> f.filter(first), first.exc_info, first.getMessage()
(True, None, "Encountered exception during execution: Outcome('raw_events: expect_unique(id)')")
>>> f.filter(record(outcome, "Engine execution exited with unexpected exception"))
False
>>> bug = record(ValueError("a bug"))
>>> f.filter(bug), bug.exc_info is not None
(True, True)
"""

from __future__ import annotations

import logging

FLOW_RUN_LOGGER = "prefect.flow_runs"  # the logger of Prefect's flow engine records


class OneLineFailures(logging.Filter):
    """Expected failures (``one_line = True``): first record kept without traceback, repeats dropped."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: list[BaseException] = []  # identity, not equality; a few at most per process

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not getattr(exc, "one_line", False):
            return True
        if any(e is exc for e in self._seen):
            return False
        self._seen = [*self._seen[-9:], exc]
        record.exc_info, record.exc_text = None, None
        return True


def one_line_failures() -> None:
    """Install the filter on Prefect's flow-run logger of this process (idempotent)."""
    logger = logging.getLogger(FLOW_RUN_LOGGER)
    if not any(isinstance(f, OneLineFailures) for f in logger.filters):
        logger.addFilter(OneLineFailures())
