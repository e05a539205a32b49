"""Model folders: every reader finishes a folder swap that a kill interrupted before it looks, so a complete learner
waiting beside its folder is never reported missing."""
import shutil
from pathlib import Path

import pytest

from mcls.errors import UserError
from mcls.modeldirs import check_model_dir, fold_dirs, learners_in
from mcls.train import train_task
from tests.helpers import _cli, _copy_models, _dead_pid, one_line_error


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


def test_joint_and_task_learners_never_share_a_folder(trained, tmp_path):
    models = _copy_models(trained, tmp_path)          # three task learners
    s = trained['settings']
    with pytest.raises(UserError, match=r'holds task learners .*--export-dir'):
        train_task(trained['table'], s, 'joint', 0, export_dir=models, progress=False)
    joint_only = tmp_path / 'joint'
    joint_only.mkdir()
    (joint_only / 'joint.json').write_text('{}')
    with pytest.raises(UserError, match=r'holds a joint learner.*mask learner cannot share'):
        train_task(trained['table'], s, 'mask', 0, export_dir=joint_only, progress=False)
    assert not list(Path(s.paths.runs).glob('*-joint-*'))     # refused before a run began


def test_an_export_dir_that_is_a_file_is_refused_before_any_work(synth_root):
    (synth_root / 'precious.txt').write_text('keep me')
    r = _cli('train', 'mask', '--data', synth_root / 'data', '--no-pretrained', '--export-dir',
             synth_root / 'precious.txt', '--set', f'paths.runs={synth_root / "runs"}',
             '--set', f'paths.cache={synth_root / "crops"}', cwd=synth_root)
    one_line_error(r, 'precious.txt', 'a file is in the way')
    assert (synth_root / 'precious.txt').read_text() == 'keep me'
    assert not (synth_root / 'runs').exists() and not (synth_root / 'crops').exists()

