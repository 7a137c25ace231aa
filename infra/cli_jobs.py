"""Job commands of the `rtml` CLI (produce, bootstrap, score, ...), registered on the main app."""

from __future__ import annotations
