"""glibc malloc in the scoring job's processes (``spark.malloc_mmap_threshold``, ``spark.malloc_arena_max``).

A block of ``threshold`` bytes or more is mapped on its own and unmapped when freed, and the heap's
free top is trimmed past it. glibc's default threshold starts at 128 KB but grows to the largest
block freed (up to 32 MB), so after the first micro-batches the numpy/pandas arrays and the native
allocations of a batch are carved from the heap and stay in each process's memory between batches
(Arrow's own buffers come from pyarrow's memory pool, which glibc's settings do not touch).

glibc also gives each thread that allocates while the others hold their arenas an arena of its own,
up to eight per core, and memory freed in one arena serves only that arena. The driver, the JVM and
the Python workers are multi-threaded (py4j, librdkafka, Arrow, the JVM's compiler and collector
threads), so ``arena_max`` caps the arenas per process (``MALLOC_ARENA_MAX``; rtml's default 2).

What the user set wins, per parameter: ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` /
``MALLOC_ARENA_MAX`` or the same parameter in ``GLIBC_TUNABLES``.

>>> malloc_env(131072, {})
{'MALLOC_MMAP_THRESHOLD_': '131072', 'MALLOC_TRIM_THRESHOLD_': '131072'}
>>> malloc_env(131072, {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"})
{'MALLOC_TRIM_THRESHOLD_': '131072'}
>>> malloc_env(0, {}, arena_max=2)
{'MALLOC_ARENA_MAX': '2'}
>>> malloc_env(0, {})
{}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

_log = logging.getLogger("rtml.spark")

# variable -> (GLIBC_TUNABLES name, mallopt parameter from glibc's malloc.h)
_PARAMS = {
    "MALLOC_MMAP_THRESHOLD_": ("glibc.malloc.mmap_threshold", -3),  # M_MMAP_THRESHOLD
    "MALLOC_TRIM_THRESHOLD_": ("glibc.malloc.trim_threshold", -1),  # M_TRIM_THRESHOLD
    "MALLOC_ARENA_MAX": ("glibc.malloc.arena_max", -8),  # M_ARENA_MAX
}
_THRESHOLDS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _tunables(env: Mapping[str, str]) -> dict[str, str]:
    """The malloc parameters ``env`` sets in ``GLIBC_TUNABLES``, by variable name.

    >>> _tunables({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1:glibc.malloc.arena_max=2"})
    {'MALLOC_TRIM_THRESHOLD_': '1', 'MALLOC_ARENA_MAX': '2'}
    """
    pairs = (t.split("=", 1) for t in env.get("GLIBC_TUNABLES", "").split(":") if "=" in t)
    given = dict(pairs)  # as glibc reads it: names as written (" glibc.malloc..." is not one)
    return {name: given[tunable] for name, (tunable, _) in _PARAMS.items() if tunable in given}


def user_set(env: Mapping[str, str]) -> set[str]:
    """The malloc variables ``env`` sets itself, directly or through ``GLIBC_TUNABLES``.

    >>> sorted(user_set({"MALLOC_TRIM_THRESHOLD_": "1", "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=9"}))
    ['MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_']
    >>> user_set({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold:glibc.malloc.trim_threshold=1"})
    {'MALLOC_TRIM_THRESHOLD_'}
    """
    return {name for name in _PARAMS if name in env} | set(_tunables(env))


def _rtml(threshold: int, arena_max: int) -> dict[str, str]:
    """The variables rtml's settings ask for (0: none of that setting)."""
    out = {name: str(threshold) for name in _THRESHOLDS} if threshold else {}
    return out | ({"MALLOC_ARENA_MAX": str(arena_max)} if arena_max else {})


def malloc_env(threshold: int, env: Mapping[str, str], arena_max: int = 0) -> dict[str, str]:
    """rtml's malloc variables for ``threshold`` and ``arena_max`` (0: none of that one) that ``env``
    does not set itself."""
    mine = user_set(env)
    return {name: v for name, v in _rtml(threshold, arena_max).items() if name not in mine}


def for_executors(threshold: int, env: Mapping[str, str], arena_max: int = 0) -> dict[str, str]:
    """The variables the Python workers and executors get: rtml's, with the user's own values where
    ``env`` sets them, as ``MALLOC_*`` or in ``GLIBC_TUNABLES`` (forwarded as the ``MALLOC_*``
    variable, so executors on other hosts get them without the user's ``GLIBC_TUNABLES``; a
    parameter set both ways takes the tunable's value, as glibc does); for a setting at 0, nothing
    of it (the user's own values of that parameter stay theirs, not forwarded).

    >>> for_executors(131072, {"MALLOC_MMAP_THRESHOLD_": "65536"})
    {'MALLOC_TRIM_THRESHOLD_': '131072', 'MALLOC_MMAP_THRESHOLD_': '65536'}
    >>> for_executors(131072, {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"})
    {'MALLOC_TRIM_THRESHOLD_': '131072', 'MALLOC_MMAP_THRESHOLD_': '65536'}
    >>> for_executors(0, {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "4"}, arena_max=2)
    {'MALLOC_ARENA_MAX': '4'}
    >>> for_executors(0, {"MALLOC_MMAP_THRESHOLD_": "65536"})
    {}
    """
    ours = _rtml(threshold, arena_max)
    users = {name: env[name] for name in _PARAMS if name in env} | _tunables(env)
    return malloc_env(threshold, env, arena_max) | {n: v for n, v in users.items() if n in ours}


def set_malloc(wanted: Mapping[str, str]) -> list[str]:
    """Apply ``wanted`` (from :func:`malloc_env`) to this running process through glibc's
    ``mallopt`` (the variables act only when a process starts); the variables applied (none
    without glibc).

    >>> set_malloc({})
    []
    """
    import ctypes

    try:
        mallopt = getattr(ctypes.CDLL("libc.so.6"), "mallopt", None) if wanted else None
    except OSError:  # not glibc (musl, macOS): nothing to tune
        mallopt = None
    if mallopt is None:
        return []
    done = [name for name, value in wanted.items() if mallopt(_PARAMS[name][1], int(value)) == 1]
    _log.debug("malloc: %s set in this process", ", ".join(f"{n}={wanted[n]}" for n in done) or "nothing")
    return done
