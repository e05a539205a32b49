"""Tests of mcls.submission."""
import errno
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mcls.errors import DataError, WriteError
from tests.helpers import _digest, _probs, _sub


def test_a_failed_write_leaves_the_old_pair(tmp_path, monkeypatch):
    from mcls import atomic
    from mcls.submission import probs_path, read_submission_probs, write_submission
    out = tmp_path / 'sub.csv'
    write_submission(_sub([0, 1]), _probs(0.1), out)
    before = _digest(tmp_path)
    real, calls = os.replace, []

    def second_fails(a, b):
        calls.append(b)
        if len(calls) == 2: raise OSError(errno.ENOSPC, 'No space left on device')
        return real(a, b)

    monkeypatch.setattr(atomic.os, 'replace', second_fails)
    with pytest.raises(WriteError, match='free disk space'): write_submission(_sub([2, 3]), _probs(0.2), out)
    monkeypatch.setattr(atomic.os, 'replace', real)
    assert _digest(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ['sub.csv',
                                                                                          'sub.csv.probs.npz']
    assert read_submission_probs(out, ('mask',), '')['mask'][0, 0] == 0.1
    assert probs_path(out).name == 'sub.csv.probs.npz'


def test_a_failed_first_write_leaves_no_orphan(tmp_path, monkeypatch):
    from mcls.submission import write_submission
    monkeypatch.setattr(Path, 'write_text', lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EFBIG,
                                                                                          'File too large')))
    with pytest.raises(WriteError): write_submission(_sub([0, 1]), _probs(0.1), tmp_path / 'sub.csv')
    assert list(tmp_path.iterdir()) == []


def test_parted_files_are_refused_where_they_are_read_together(tmp_path):
    """a kill between the two renames (or a hand-edited CSV): the reader sees the CSV is not the one the npz was
    written with"""
    from mcls.submission import read_submission_probs, write_submission
    write_submission(_sub([0, 1]), _probs(0.1), tmp_path / 'old.csv')
    write_submission(_sub([2, 3]), _probs(0.2), tmp_path / 'new.csv')
    shutil.copy(tmp_path / 'new.csv.probs.npz', tmp_path / 'old.csv.probs.npz')
    with pytest.raises(DataError, match='written with another old.csv'): read_submission_probs(tmp_path / 'old.csv',
                                                                                               (), '')


def test_submission_path_that_is_a_folder_is_one_clear_error(tmp_path):
    from mcls.atomic import write_csv_atomic
    (tmp_path / 'sub.csv').mkdir()
    with pytest.raises(WriteError, match='in the way'): write_csv_atomic(pd.DataFrame({'a': [1]}), tmp_path / 'sub.csv')
    assert (tmp_path / 'sub.csv').is_dir() and [p.name for p in tmp_path.iterdir()] == ['sub.csv']

