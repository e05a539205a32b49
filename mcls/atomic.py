"""Atomic writes: results appear whole or not at all; what a killed writer leaves behind is cleaned up later."""
from __future__ import annotations

import errno
import os
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import DataError, WriteError

__all__ = ['atomic_path', 'atomic_dir', 'recover_dir', 'write_text_atomic', 'write_csv_atomic', 'remove_stray',
           'storage_errors', 'read_npz']

# errors of the disk or folder, not of the data: the user frees space or fixes permissions
_STORAGE = {errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}
_IN_THE_WAY = {errno.EISDIR, errno.ENOTDIR, errno.EEXIST}      # e.g. --out names a folder, a cache path is a file


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # someone else's process: alive
        pass
    return True


def _owner(name: str) -> int | None:
    "The writer's pid in a temporary name `.<dest>.<pid>.tmp[...]` or `.<dest>.<pid>.new`, else None."
    parts = name.split('.')
    for p in reversed(parts[:-1]):
        if p.isdigit(): return int(p)
    return None


def remove_stray(folder: Path | str, pattern: str = '.*.tmp*') -> int:
    "Delete temporaries under `folder` (one level) whose writer is gone, e.g. after a kill; returns how many."
    n = 0
    for p in Path(folder).glob(pattern):
        pid = _owner(p.name)
        if pid is None or pid == os.getpid() or _alive(pid): continue
        if p.is_dir(): shutil.rmtree(p, ignore_errors=True)
        else: p.unlink(missing_ok=True)
        n += 1
    return n


@contextmanager
def storage_errors(dest: Path | str):
    "OSErrors of the disk or folder while writing `dest` become one WriteError naming it and the fix."
    try:
        yield
    except OSError as e:        # a WriteError (errno None) passes through unchanged
        if e.errno in _IN_THE_WAY:
            raise WriteError(f'{dest}: could not be written ({e.strerror or e}: a file or folder is in the way at '
                             f'{e.filename or dest}); give another path or move it') from None
        if e.errno not in _STORAGE: raise
        raise WriteError(f'{dest}: could not be written ({e.strerror or e}); free disk space or make the folder '
                         f'writable, then run the command again') from None


@contextmanager
def atomic_path(dest: Path | str):
    "Yield a temporary path beside `dest`; rename it onto `dest` only if the block finishes."
    dest = Path(dest)
    with storage_errors(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f'.{dest.name}.{os.getpid()}.tmp')
        try:
            yield tmp
            os.replace(tmp, dest)
        finally:
            if tmp.exists(): tmp.unlink()


def recover_dir(dest: Path | str) -> Path:
    """Finish a folder swap that a kill interrupted (see `atomic_dir`): `dest` missing but a complete new
    folder beside it takes its place; leftovers of dead writers are removed."""
    dest = Path(dest)
    if not dest.parent.is_dir(): return dest
    if not dest.exists():
        done = sorted(p for p in dest.parent.glob(f'.{dest.name}.*.new') if (p / '.complete').exists())
        if done: os.replace(done[-1], dest)
    remove_stray(dest.parent, f'.{dest.name}.*.new')
    remove_stray(dest.parent, f'.{dest.name}.*.old')
    return dest


@contextmanager
def atomic_dir(dest: Path | str):
    """Yield a new folder holding a copy of `dest`'s files; it replaces `dest` as a unit only if the block
    finishes. Readers that call `recover_dir` first never see a mix of old and new files."""
    dest = recover_dir(dest)
    pid = os.getpid()
    new, old = dest.with_name(f'.{dest.name}.{pid}.new'), dest.with_name(f'.{dest.name}.{pid}.old')
    with storage_errors(dest):
        if new.exists(): shutil.rmtree(new)
        if dest.is_dir(): shutil.copytree(dest, new, copy_function=_link_or_copy)
        else: new.mkdir(parents=True)
        try:
            yield new
            (new / '.complete').touch()
            if dest.exists(): os.replace(dest, old)
            os.replace(new, dest)     # a kill between the two renames: recover_dir finishes the swap
            (dest / '.complete').unlink(missing_ok=True)
        finally:
            if new.exists(): shutil.rmtree(new, ignore_errors=True)
            if old.exists(): shutil.rmtree(old, ignore_errors=True)


def _link_or_copy(src, dst):
    "Hard links make the copy free; files in these folders are only ever replaced, never written in place."
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_text_atomic(dest: Path | str, text: str):
    with atomic_path(dest) as tmp: Path(tmp).write_text(text)


def write_csv_atomic(df, dest: Path | str, **kwargs):
    with atomic_path(dest) as tmp: df.to_csv(tmp, index=False, **kwargs)


def read_npz(path: Path | str, keys: tuple[str, ...], fix: str) -> dict:
    "An .npz these writers made, read whole: missing, damaged or foreign files are one DataError naming the fix."
    path = Path(path)
    if not path.exists(): raise DataError(f'{path}: not found; {fix}')
    try:
        with np.load(path, allow_pickle=False) as z: data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f'{path}: cannot be read ({type(e).__name__}: {e}); {fix}') from None
    missing = sorted(set(keys) - set(data))
    if missing: raise DataError(f'{path}: lacks {missing}; {fix}')
    return data
