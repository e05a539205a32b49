"""Model folders: every reader finishes a folder swap that a kill interrupted before it looks, so a complete learner
waiting beside its folder is never reported missing."""
import shutil

import pytest

from mcls.modeldirs import check_model_dir, fold_dirs, learners_in
from tests.test_reliability import _dead_pid


def _killed_between_renames(trained, models_root):
    "models_root/fold0 as a kill between atomic_dir's two renames leaves it: the new folder complete, fold0 gone."
    new = models_root / f'.fold0.{_dead_pid()}.new'
    shutil.copytree(trained['models'], new)
    (new / '.complete').touch()
    return models_root / 'fold0'


def _predict_default(s):
    from mcls.cli import _model_dirs
    return _model_dirs(s, None)


def _compare(s):
    from mcls.compare import read_side
    return read_side([s.paths.models / 'fold0'])


READERS = {
    'check_model_dir (predict --models, predict-image, export-onnx, interpret)':
        lambda s: check_model_dir(s.paths.models / 'fold0'),
    'fold_dirs (tune)': lambda s: fold_dirs(s.paths.models),
    'predict without --models': _predict_default,
    'compare': _compare,
    'learners_in': lambda s: learners_in(s.paths.models / 'fold0'),
}


@pytest.mark.parametrize('reader', READERS)
def test_every_reader_finishes_an_interrupted_swap_first(trained, tmp_path, reader):
    import dataclasses
    s = trained['settings']
    s = dataclasses.replace(s, paths=dataclasses.replace(s.paths, models=tmp_path / 'models'))
    (tmp_path / 'models').mkdir()
    fold0 = _killed_between_renames(trained, tmp_path / 'models')
    assert not fold0.exists()
    assert READERS[reader](s)
    assert (fold0 / 'mask.json').exists() and sorted(p.name for p in (tmp_path / 'models').iterdir()) == ['fold0']
