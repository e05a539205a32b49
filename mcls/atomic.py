"""Atomic writes: results appear whole or not at all; what a killed writer leaves behind is cleaned up later."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import DataError, WriteError

__all__ = ['atomic_path', 'atomic_paths', 'atomic_dir', 'recover_dir', 'write_text_atomic', 'write_csv_atomic',
           'remove_stray', 'storage_errors', 'is_storage_error', 'read_npz', 'output_file', 'output_dir', 'folder_lock',
           'process_alive', 'process_start']

# errors of the disk or folder, not of the data: the user frees space or fixes permissions
_STORAGE = {errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}
_IN_THE_WAY = {errno.EISDIR, errno.ENOTDIR, errno.EEXIST}      # e.g. --out names a folder, a cache path is a file


def process_start(pid: int) -> float | None:
    "When process `pid` started (seconds since the epoch), None where it cannot be read."
    import psutil
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_alive(pid: int, start: float | None = None) -> bool:
    """Whether the process `pid` still runs; with `start` (process_start), a new process that reused the pid is not
    it. A zombie (ended, not yet reaped: a container's init may never reap it) does not run. (psutil: portable.)"""
    import psutil
    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD): return False
        if isinstance(start, int):      # older run.json files: clock ticks since boot (Linux /proc/<pid>/stat)
            start = psutil.boot_time() + start / os.sysconf('SC_CLK_TCK')
        return start is None or abs(proc.create_time() - start) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:     # someone else's process: alive
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
        if pid is None or pid == os.getpid() or process_alive(pid): continue
        if p.is_dir(): shutil.rmtree(p, ignore_errors=True)
        else: p.unlink(missing_ok=True)
        n += 1
    return n


# how writers that are not Python's own file objects word a disk error: torch's zip writer ('file write failed',
# and 'unexpected pos N vs M' when a short write leaves it behind), its C++ streams ('iostream error'),
# safetensors' Rust code (StorageFull, FileTooLarge, 'code: 28' / 'code: 27' = ENOSPC / EFBIG)
_STORAGE_WORDS = ('no space left', 'file too large', 'disk quota', 'read-only file system', 'file write failed',
                  'unexpected pos', 'iostream error', 'storagefull', 'filetoolarge', 'code: 28', 'code: 27')


def is_storage_error(e: BaseException) -> bool:
    "An error of the disk or folder (full, size limit, read-only), whichever library raised it, or raised it from."
    seen = set()
    while e is not None and id(e) not in seen:     # a library's own error may wrap the OSError that caused it
        seen.add(id(e))
        if isinstance(e, WriteError): return False
        if isinstance(e, OSError) and e.errno is not None:
            if e.errno in _STORAGE: return True
        elif any(w in str(e).lower() for w in _STORAGE_WORDS): return True
        e = e.__cause__ or e.__context__
    return False


@contextmanager
def storage_errors(dest: Path | str):
    """Disk and folder errors while writing `dest` (OSErrors, and torch's or safetensors' words for them) become
    one WriteError naming it and the fix."""
    try:
        yield
    except Exception as e:      # a WriteError passes through unchanged
        if isinstance(e, OSError) and e.errno in _IN_THE_WAY:
            raise WriteError(f'{dest}: could not be written ({e.strerror or e}: a file or folder is in the way at '
                             f'{e.filename or dest}); give another path or move it') from None
        if not is_storage_error(e): raise
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:120]
        raise WriteError(f'{dest}: could not be written ({why}); free disk space or make the folder '
                         f'writable, then run the command again') from None


def output_file(path: Path | str, what: str) -> Path:
    "Refuse, before any work, an output file path where a folder is (or a file stands where its folder goes)."
    path = Path(path)
    if path.is_dir():
        raise WriteError(f'{path}: {what} is a file, but a folder is in the way there; give a file path '
                         f'or move the folder')
    _no_file_above(path, what)
    return path


def output_dir(path: Path | str, what: str) -> Path:
    "Refuse, before any work, an output folder path where a file is."
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WriteError(f'{path}: {what} is a folder, but a file is in the way there; give a folder path '
                         f'or move the file')
    _no_file_above(path, what)
    if path.is_dir(): _takes_files(path, path, what)
    return path


def _no_file_above(path: Path, what: str):
    "The nearest existing folder above `path` must be a folder that takes new files (it gets the temporary)."
    for up in path.parents:
        if up.exists():
            if not up.is_dir():
                raise WriteError(f'{path}: {what} cannot be written: {up} is a file, not a folder; give another path')
            return _takes_files(up, path, what)


def _takes_files(folder: Path, path: Path, what: str):
    "A probe file, not os.access: root passes access checks on a read-only mount."
    try:
        fd, probe = tempfile.mkstemp(prefix='.mcls-probe-', dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise WriteError(f'{path}: {what} cannot be written: {folder} does not take new files '
                         f'({e.strerror or e}); make it writable or give another path') from None


@contextmanager
def atomic_path(dest: Path | str):
    "Yield a temporary path beside `dest`; rename it onto `dest` only if the block finishes."
    dest = Path(dest)
    with storage_errors(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stray(dest.parent, f'.{dest.name}.*.tmp')     # what a killed writer of `dest` left
        tmp = dest.with_name(f'.{dest.name}.{os.getpid()}.tmp')
        try:
            yield tmp
            os.replace(tmp, dest)
        finally:
            if tmp.exists(): tmp.unlink()


@contextmanager
def atomic_paths(*dests: Path | str):
    """Files that belong together (a submission and its probabilities): each is written to a temporary; only when
    all are whole are they renamed, in the order given, and a failed rename puts back what was there before.
    A kill between two renames can still part them: readers check a pairing token (see mcls.predict)."""
    dests = [Path(d) for d in dests]
    tmps = [d.with_name(f'.{d.name}.{os.getpid()}.tmp') for d in dests]
    backups: dict[Path, Path] = {}
    with storage_errors(dests[0]):
        try:
            for d in dests:
                d.parent.mkdir(parents=True, exist_ok=True)
                remove_stray(d.parent, f'.{d.name}.*.tmp*')
            yield tmps
            done = []
            try:
                for d, t in zip(dests, tmps):
                    if d.exists():
                        backups[d] = d.with_name(f'.{d.name}.{os.getpid()}.tmp.old')
                        os.link(d, backups[d])
                    os.replace(t, d)
                    done.append(d)
            except BaseException:
                for d in done:
                    if d in backups: os.replace(backups.pop(d), d)
                    else: d.unlink(missing_ok=True)
                raise
        finally:
            for p in (*tmps, *backups.values()): p.unlink(missing_ok=True)


@contextmanager
def folder_lock(dest: Path | str, what: str):
    """Hold an exclusive lock on the output folder `dest` (a lock file beside it, filelock's: flock on POSIX,
    msvcrt on Windows) while one process writes it: a second writer is refused at once with one line naming the
    holder; the kernel releases the lock with its process, even after kill -9."""
    from filelock import FileLock, Timeout
    dest = Path(dest)
    lock, who = dest.with_name(f'.{dest.name}.lock'), dest.with_name(f'.{dest.name}.lock.pid')
    held = FileLock(lock)
    with storage_errors(lock):
        lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            held.acquire(timeout=0)
        except Timeout:
            try:
                holder = who.read_text().strip()
            except OSError:
                holder = 'another process'
            raise WriteError(f'{dest}: another training is writing this {what} ({holder}); wait for it to finish '
                             f'or give another folder (--export-dir)') from None
    try:
        who.write_text(f'pid {os.getpid()}')       # for the refusal's message; the lock is the file beside it
        yield dest
    finally:
        held.release()


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
