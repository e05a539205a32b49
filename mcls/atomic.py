"""Atomic writes: results appear whole or not at all."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

__all__ = ['atomic_path', 'write_text_atomic', 'write_csv_atomic']


@contextmanager
def atomic_path(dest: Path | str):
    "Yield a temporary path beside `dest`; rename it onto `dest` only if the block finishes."
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f'.{dest.name}.{os.getpid()}.tmp')
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        if tmp.exists(): tmp.unlink()


def write_text_atomic(dest: Path | str, text: str):
    with atomic_path(dest) as tmp: Path(tmp).write_text(text)


def write_csv_atomic(df, dest: Path | str, **kwargs):
    with atomic_path(dest) as tmp: df.to_csv(tmp, index=False, **kwargs)
