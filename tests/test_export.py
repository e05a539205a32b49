"""Tests of mcls.export."""
import pickle
import shutil
import warnings

import pytest

from mcls.errors import DataError, WriteError
from mcls.export import load_task_learner
from tests.helpers import _copy_models, _digest, _Evil


def test_a_full_disk_during_export_is_one_error_and_the_folder_unchanged(trained, tmp_path, monkeypatch):
    import mcls.export as E
    from mcls.export import load_task_learner
    models = _copy_models(trained, tmp_path)
    before = _digest(models)
    learn = load_task_learner(models, 'mask')

    class SafetensorError(Exception): pass

    def full(*a, **k):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    monkeypatch.setattr(E, 'save_file', full)
    with pytest.raises(WriteError, match='No space left'):
        E.export_learner(learn, trained['settings'].tasks['mask'], models, trained['settings'], 0.5)
    assert _digest(models) == before and [p.name for p in tmp_path.iterdir()] == ['models']


def test_kill_during_export_leaves_the_old_folder_whole(trained, tmp_path, monkeypatch):
    "item 4: a kill after the new .pkl is written: the folder keeps the old files, all of them, and no temporaries."
    import mcls.export as E
    models = _copy_models(trained, tmp_path)
    before = _digest(models)
    learn = load_task_learner(models, 'mask')
    s = trained['settings']

    def killed(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(E, 'save_file', killed)
    with pytest.raises(KeyboardInterrupt): E.export_learner(learn, s.tasks['mask'], models, s, 0.5)
    assert _digest(models) == before
    assert [p.name for p in tmp_path.iterdir()] == ['models']


def test_crafted_pickle_is_never_loaded_by_default(trained, tmp_path, monkeypatch):
    "item 3: predict and predict-image rebuild from weights; --pickle loads it and fastai warns."
    from mcls.predict import predict_frame
    models = _copy_models(trained, tmp_path)
    marker = tmp_path / 'ran'
    monkeypatch.setenv('MCLS_TEST_MARKER', str(marker))
    (models / 'mask.pkl').write_bytes(pickle.dumps(_Evil()))
    df = trained['table'].head(4)
    labels, _ = predict_frame(df, [models], trained['settings'].predict, tta=False)
    assert len(labels) == 4 and not marker.exists()
    with warnings.catch_warnings(record=True) as seen, pytest.raises(DataError, match='mask.pkl'):
        warnings.simplefilter('always')
        load_task_learner(models, 'mask', pickle=True)
    assert marker.exists() and any('insecure pickle' in str(w.message) for w in seen)


def test_the_pickle_path_refuses_a_pkl_of_another_model(trained, tmp_path):
    "item 13: the .pkl must hold the model its .json and .safetensors describe."
    models = _copy_models(trained, tmp_path)
    shutil.copy(models / 'gender.pkl', models / 'mask.pkl')      # 2 outputs where mask has 3
    with pytest.raises(DataError, match='another model'): load_task_learner(models, 'mask', pickle=True)


@pytest.mark.parametrize('name,content,match', [
    ('mask.json', '{"arch": ', 'not a valid mcls export'),
    ('mask.safetensors', None, 'cannot be loaded'),
    ('mask.settings.ini', '[train\nsize=', 'cannot be loaded'),
])
def test_damaged_exports_are_one_line_errors(trained, tmp_path, name, content, match):
    "item 10: an invalid .json, a truncated .safetensors, a broken settings file."
    models = _copy_models(trained, tmp_path)
    p = models / name
    p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]) if content is None else p.write_text(content)
    with pytest.raises(DataError, match=match) as e: load_task_learner(models, 'mask')
    assert name in str(e.value)

