"""Tests of mcls.probfiles."""
import shutil

import numpy as np
import pandas as pd
import pytest

from mcls.errors import DataError
from tests.helpers import _cli, _copy_models, _valid_folder, one_line_error


@pytest.mark.cli
def test_a_nan_probability_is_refused_before_any_table_or_plot(tmp_path):
    good, bad = _valid_folder(tmp_path / 'good'), _valid_folder(tmp_path / 'bad', age__probs=np.full((12, 3), np.nan))
    r = _cli('compare', good, bad, '--set', f'paths.reports={tmp_path / "reports"}', cwd=tmp_path)
    one_line_error(r, 'age.valid.npz', 'nan')
    assert 'B - A' not in r.stdout and not (tmp_path / 'reports').exists()


def test_probabilities_beside_a_submission_are_checked_too(tmp_path):
    from mcls.submission import read_submission_probs, write_submission
    sub = pd.DataFrame({'ImageID': ['a.jpg', 'b.jpg'], 'ans': [0, 1]})
    write_submission(sub, {'mask': np.full((2, 3), 1 / 3), 'gender': np.full((2, 3), 1 / 3), 'age': np.full((2, 3),
                                                                                                            1 / 3)},
                     tmp_path / 's.csv')
    with pytest.raises(DataError, match=r'gender probabilities of shape \(2, 3\)'):
        read_submission_probs(tmp_path / 's.csv', ('mask', 'gender', 'age'), '')


@pytest.mark.parametrize('damage', ['truncated', 'foreign'])
def test_damaged_probability_files_are_one_line_errors(trained, tmp_path, damage):
    "validation and predict .npz files feed tune, suspects, pseudo-labels and grouping scores"
    from mcls.pseudo import pseudo_rows
    from mcls.tune import load_oof
    models = _copy_models(trained, tmp_path)
    p = models / 'age.valid.npz'
    if damage == 'truncated': p.write_bytes(p.read_bytes()[:100])
    else: np.savez(p, something=np.zeros(3))
    with pytest.raises(DataError, match='age.valid.npz'): load_oof([models], 'age')
    shutil.copy(p, tmp_path / 'sub.csv.probs.npz')
    with pytest.raises(DataError, match='sub.csv.probs.npz'): pseudo_rows(tmp_path / 'sub.csv.probs.npz', 0.9)

