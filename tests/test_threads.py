"""Torch threads of a job: [train] threads, or auto: the cores shared by the mcls jobs running on the machine."""
import logging
import os
import subprocess
import sys

import pytest
import torch

from mcls import threads


@pytest.fixture
def registry(tmp_path, monkeypatch):
    "A registry of its own (this process not in it yet), so jobs running beside the tests do not count."
    monkeypatch.setattr(threads, 'REGISTRY', tmp_path / 'jobs')
    monkeypatch.setattr(threads, '_held', None)
    monkeypatch.setenv('TMPDIR', str(tmp_path))
    n = torch.get_num_threads()
    yield tmp_path / 'jobs'
    torch.set_num_threads(n)


def other_job(registry):
    "Another process holding its place in the registry until its stdin closes."
    code = ('import sys; from mcls import threads; from pathlib import Path; threads.REGISTRY = Path(sys.argv[1]); '
            'threads._join(); print("in", flush=True); sys.stdin.read()')   # killed mid-job: its file stays
    p = subprocess.Popen([sys.executable, '-c', code, str(registry)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == 'in'
    return p


def test_a_number_is_used_as_given(registry):
    assert threads.resolve_threads(3) == (3, 0)
    assert threads.use_threads(1) == '1 torch thread (threads = 1)' and torch.get_num_threads() == 1


def test_auto_shares_the_cores_among_live_jobs_and_forgets_ended_ones(registry):
    assert threads.live_jobs() == 1
    assert threads.resolve_threads(None) == (min(threads.lone_threads(), threads.cores()), 1)
    p = other_job(registry)
    try:
        with threads.job():
            assert (registry / str(os.getpid())).exists()
            assert threads.live_jobs() == 2
            assert threads.resolve_threads(None) == (max(1, min(threads.lone_threads(), threads.cores() // 2)), 2)
            assert '2 mcls jobs running' in threads.use_threads(None)
        assert threads.live_jobs() == 2      # an idle process counts for none, the other job still runs
    finally:
        p.stdin.close(); p.wait()
    assert threads.live_jobs() == 1
    assert not list(registry.iterdir())      # neither this process's file nor the ended job's is left


def test_a_training_follows_jobs_that_start_while_it_runs(registry, monkeypatch):
    from mcls.train import ThreadShare
    share = ThreadShare(every=0)
    monkeypatch.setattr(threads, 'resolve_threads', lambda t: (1, 2))
    torch.set_num_threads(2)
    share.before_batch()
    assert torch.get_num_threads() == 1


def test_a_job_killed_by_sigkill_is_no_longer_counted(registry):
    "the registry's locks are filelock's: the kernel releases them with the process, kill -9 included"
    p = other_job(registry)
    assert threads.live_jobs() == 2
    p.kill(); p.wait()
    assert threads.live_jobs() == 1 and not list(registry.iterdir())


@pytest.mark.parametrize('where', ['a file', 'below a file'])
def test_an_unwritable_jobs_registry_runs_the_job_counted_alone(tmp_path, monkeypatch, caplog, where):
    import mcls.threads as T
    blocker = tmp_path / 'registry'
    blocker.write_text('not a folder')
    monkeypatch.setattr(T, 'REGISTRY', blocker if where == 'a file' else blocker / 'inner')
    with caplog.at_level(logging.WARNING):
        with T.job():
            assert T.live_jobs() == 1 and T.resolve_threads(None)[1] == 1
    assert 'the jobs registry cannot be written' in caplog.text and 'counted' in caplog.text
    assert blocker.read_text() == 'not a folder'


def test_more_threads_than_cores_is_said(monkeypatch):
    import mcls.threads as T
    monkeypatch.setattr(T, 'cores', lambda: 2)
    assert 'more than the 2 cores here' in T.describe_threads(64, 64, 0)
    assert T.describe_threads(2, 2, 0) == '2 torch threads (threads = 2)'

