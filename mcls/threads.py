"""Torch threads of a job: `[train] threads`, or auto: the machine's cores shared by the mcls jobs running on it.
A process holds a lock file while it trains or predicts (`job()`; the kernel releases it however the process ends),
so every job can count the others, and an idle process (a notebook between fits) counts for none; a training
rechecks as jobs start and end. Two jobs that each take a thread per core spin waiting for each
other (docs/benchmarks.md, 'Two jobs on one machine'). Light: torch is imported only where threads are set, so the
launcher and the tests of the registry start fast; the training's callback lives in mcls.train."""
from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from functools import lru_cache

from filelock import FileLock, Timeout

__all__ = ['REGISTRY', 'cores', 'lone_threads', 'rank_cores', 'job', 'live_jobs', 'resolve_threads', 'use_threads',
           'describe_threads']

REGISTRY = Path(tempfile.gettempdir()) / f'mcls-jobs-{os.getuid()}'
_held = None                        # this process's open, locked registry file
log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def lone_threads() -> int:
    "torch's own choice for a lone process (OMP_NUM_THREADS where set), read before mcls first sets any."
    import torch
    return torch.get_num_threads()


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def rank_cores() -> int:
    "This process's share of the cores: all of them, or 1/N for each of N ranks on this machine (LOCAL_WORLD_SIZE)."
    return max(1, cores() // max(1, int(os.environ.get('LOCAL_WORLD_SIZE', 1) or 1)))


def _join() -> bool:
    """Put this process in the registry: a file named by its pid, exclusively locked (filelock) while it is there.
    Where the registry cannot be written the job runs all the same, counted alone, and says so: books never stop
    the work."""
    global _held
    try:
        REGISTRY.mkdir(parents=True, exist_ok=True)
        fh = FileLock(REGISTRY / str(os.getpid()))
        fh.acquire(timeout=0)
    except (OSError, Timeout) as e:
        log.warning('%s: the jobs registry cannot be written (%s): this job is not counted by other mcls jobs and '
                    'counts none; threads = auto shares the cores as if it ran alone (set [train] threads, or fix '
                    'or remove %s)', REGISTRY, getattr(e, 'strerror', None) or e, REGISTRY)
        return False
    _held = fh
    return True


def _leave():
    global _held
    fh, _held = _held, None
    fh.release()
    try:
        Path(fh.lock_file).unlink(missing_ok=True)
    except OSError:
        pass        # live_jobs drops files nobody holds


@contextmanager
def job():
    "Inside the block this process counts as a running mcls job (nested blocks count once)."
    if _held is not None or not _join():
        yield
        return
    try:
        yield
    finally:
        _leave()


def live_jobs() -> int:
    "mcls jobs running on this machine, this one included; files of jobs that are gone are removed."
    n = 0 if _held is not None else 1
    try:
        files = list(REGISTRY.iterdir()) if REGISTRY.is_dir() else []
    except OSError:
        files = []       # an unreadable registry: counted alone, as _join said
    for f in files:
        probe = FileLock(f)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            n += 1
            continue
        except OSError:
            continue
        probe.release()
        f.unlink(missing_ok=True)          # nobody held it: its job is gone
    return n


def resolve_threads(threads: int | None) -> tuple[int, int]:
    "(threads, jobs): `threads` as given, or for None (auto) a lone job's share of the cores among the live jobs."
    if threads is not None: return threads, 0
    jobs = live_jobs()
    return max(1, min(lone_threads(), cores() // jobs)), jobs


def use_threads(threads: int | None) -> str:
    "Set torch's threads for `[train] threads` (None: auto) and say how many, for the job's start-up line."
    import torch
    lone_threads()          # torch's own choice, before it is changed here
    n, jobs = resolve_threads(threads)
    torch.set_num_threads(n)
    return describe_threads(n, threads, jobs)


def describe_threads(n: int, threads: int | None, jobs: int) -> str:
    head = f'{n} torch thread{"s" if n != 1 else ""}'
    if threads is not None and threads > cores():
        return (f'{head} (threads = {threads}, more than the {cores()} cores here: threads wait for each other and '
                f'the job slows down; set [train] threads = auto)')
    if threads is not None: return f'{head} (threads = {threads})'
    return f'{head} (threads = auto: {cores()} cores, {jobs} mcls job{"s" if jobs != 1 else ""} running)'
