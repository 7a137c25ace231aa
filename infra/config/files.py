"""Whole-file replacement: a reader sees the old file or the new one, never a half-written one.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "run" / "state.json"
>>> replace_file(p, '{"pid": 1}')
>>> p.read_text()
'{"pid": 1}'
>>> replace_file(p, "{}", private=True); oct(p.stat().st_mode & 0o777)
'0o600'
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def replace_file(path: Path, text: str, private: bool = False) -> None:
    """Write ``text`` to a temporary file beside ``path`` (parents created) and rename it over
    ``path``. ``private``: the file is created readable by its owner only (it may hold secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves no temporary file (it may be private)
        raise
