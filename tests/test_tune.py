"""Tests of mcls.tune."""
import pytest

from mcls.errors import DataError
from tests.helpers import _valid_folder


def test_tune_over_folders_with_the_same_validation_photos_is_refused(tmp_path):
    from mcls.tune import load_oof
    a = _valid_folder(tmp_path / 'fold0')
    b = _valid_folder(tmp_path / 'copy', seed=3)         # the same photos validated again
    assert len(load_oof([a], 'age')[1]) == 12
    with pytest.raises(DataError, match=r'mask0\.jpg is in the validation of both .*fold0 and .*copy'):
        load_oof([a, b], 'age')

