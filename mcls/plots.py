"""Matplotlib without a display, and figures written atomically as PNG."""
from __future__ import annotations

from pathlib import Path

from .atomic import atomic_path

__all__ = ['pyplot', 'save_figure']


def pyplot():
    "matplotlib.pyplot on the Agg backend (no display needed: CLI, CI, servers)."
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, dest: Path | str) -> Path:
    "Write `fig` to `dest` as PNG via a temporary file, then close it."
    with atomic_path(dest) as tmp: fig.savefig(tmp, dpi=100, bbox_inches='tight', format='png')
    pyplot().close(fig)
    return Path(dest)
