"""Whether output goes to a person at a terminal (progress bars, rich tables) or to a log (one line per step)."""
from __future__ import annotations

import sys
from contextlib import nullcontext

__all__ = ['interactive', 'bars_for_people']


def interactive() -> bool:
    return sys.stdout.isatty()


def bars_for_people(learn):
    "fastai's progress bars on a terminal; none in a log, where each redraw would be another line of bar characters."
    return nullcontext() if interactive() else learn.no_bar()
