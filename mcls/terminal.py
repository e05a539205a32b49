"""Whether output goes to a person at a terminal (progress bars, rich tables) or to a log (one line per step)."""
from __future__ import annotations

import sys

__all__ = ['interactive']


def interactive() -> bool:
    return sys.stdout.isatty()
