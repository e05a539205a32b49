"""Tests of mcls.atomic."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from mcls.atomic import atomic_dir, folder_lock, recover_dir, remove_stray
from mcls.errors import WriteError
from mcls.export import read_meta
from mcls.train import train_task
from tests.helpers import ROOT, _copy_models, _dead_pid, _digest


def test_two_trainings_into_one_folder_cannot_both_succeed(trained, tmp_path):
    dest = _copy_models(trained, tmp_path)
    before = _digest(dest)
    with folder_lock(dest, 'export folder'):          # another training holds the folder
        with pytest.raises(WriteError, match=f'another training is writing.*pid {os.getpid()}'):
            train_task(trained['table'], trained['settings'], 'mask', 0, export_dir=dest, progress=False)
    assert _digest(dest) == before


def test_the_folder_lock_dies_with_its_process(tmp_path):
    "kill -9 of the holder frees the folder: no stale lock to clean by hand."
    code = (f'import time; from mcls.atomic import folder_lock\n'
            f'with folder_lock({str(tmp_path / "m")!r}, "f"): print("held", flush=True); time.sleep(60)')
    p = subprocess.Popen([sys.executable, '-c', code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == 'held'
        with pytest.raises(WriteError, match=f'pid {p.pid}'):
            with folder_lock(tmp_path / 'm', 'f'): pass
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with folder_lock(tmp_path / 'm', 'f'): pass


@pytest.mark.cli
def test_a_checkpoint_write_under_a_file_size_limit_is_one_write_error(tmp_path):
    """torch's zip writer under RLIMIT_FSIZE says 'unexpected pos N vs M' (from 'iostream error'): a WriteError, no
    temporary"""
    code = ('import resource, sys, torch\n'
            'from mcls.atomic import atomic_path\n'
            'from mcls.errors import WriteError\n'
            'resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n'
            'try:\n'
            '    with atomic_path(sys.argv[1]) as tmp: torch.save({"w": torch.zeros(1_000_000)}, tmp)\n'
            'except WriteError as e: print("WriteError:", e)\n')
    r = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'last-0.pth')], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.stdout.startswith('WriteError:') and 'last-0.pth' in r.stdout and 'free disk space' in r.stdout, r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('error', [
    RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534'),
    RuntimeError('basic_ios::clear: iostream error'),
    OSError(28, 'No space left on device'),
    OSError(27, 'File too large'),
    'wrapped',
])
def test_storage_errors_are_recognised_by_kind_whatever_the_wording(error):
    from mcls.atomic import is_storage_error
    if error == 'wrapped':     # a library's own error raised from the OSError that caused it
        try:
            try:
                raise OSError(122, 'Disk quota exceeded')
            except OSError as cause:
                raise RuntimeError('serialisation failed') from cause
        except RuntimeError as e:
            error = e
    assert is_storage_error(error)
    assert not is_storage_error(RuntimeError('CUDA error: device-side assert triggered'))
    assert not is_storage_error(OSError(2, 'No such file or directory'))


def test_kill_between_the_folder_renames_is_finished_by_the_next_reader(trained, tmp_path):
    "(a): the swap's two renames are not one step; the next reader completes it, so files always match."
    models = _copy_models(trained, tmp_path)
    pid = _dead_pid()
    new, old = tmp_path / f'.models.{pid}.new', tmp_path / f'.models.{pid}.old'
    shutil.copytree(models, new)
    meta = json.loads((new / 'mask.json').read_text())
    (new / 'mask.json').write_text(json.dumps({**meta, 'valid_f1': 0.123}))
    (new / '.complete').touch()
    models.rename(old)             # killed here: no models folder at all
    assert read_meta(models, 'mask')['valid_f1'] == 0.123
    assert sorted(p.name for p in tmp_path.iterdir()) == ['models']


def test_an_unfinished_new_folder_is_discarded(tmp_path):
    pid = _dead_pid()
    (tmp_path / 'm').mkdir()
    (tmp_path / 'm' / 'a.json').write_text('old')
    (tmp_path / f'.m.{pid}.new').mkdir()       # killed while filling it: no .complete marker
    recover_dir(tmp_path / 'm')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m'] and (tmp_path / 'm' / 'a.json').read_text() == 'old'
    with atomic_dir(tmp_path / 'm') as d: (d / 'b.json').write_text('new')
    assert sorted(p.name for p in (tmp_path / 'm').iterdir()) == ['a.json', 'b.json']


def test_stray_temporaries_of_dead_writers_are_removed(tmp_path):
    "item 13: kills leave `.name.<pid>.tmp`; those of live processes stay."
    dead, live = tmp_path / f'.a.jpg.{_dead_pid()}.tmp', tmp_path / f'.b.jpg.{os.getppid()}.tmp'
    dead.write_bytes(b'x'); live.write_bytes(b'x')
    assert remove_stray(tmp_path) == 1 and not dead.exists() and live.exists()

