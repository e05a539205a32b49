import itertools
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import f1_score

from mcls.dataset import DataError, load_eval
from mcls.evaluate import evaluate_files, read_labels
from mcls.predict import check_models, combine, predict_eval, predict_frame, view_sizes
from mcls.train import train_task
from mcls.tune import apply_offsets, fit_offsets, load_oof, read_offsets, write_offsets
from tests.helpers import _cli, _copy_models


@pytest.mark.parametrize('mask,gender,age', list(itertools.product(range(3), range(2), range(3))))
def test_combine_every_triple(mask, gender, age):
    def onehot(i, n): return np.eye(n)[[i]] * 0.8 + 0.2 / n
    assert combine(onehot(mask, 3), onehot(gender, 2), onehot(age, 3)).tolist() == [mask * 6 + gender * 3 + age]


@pytest.fixture(scope='module')
def submission(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp('sub') / 'submission.csv'
    sub = predict_eval(trained['settings'], [trained['models']], out, tta=False, progress=False)
    return out, sub


def test_submission_rows_follow_info_csv(trained, submission):
    out, sub = submission
    info = pd.read_csv(trained['root'] / 'data' / 'eval' / 'info.csv')
    written = pd.read_csv(out)
    assert list(written.columns) == ['ImageID', 'ans']
    assert written.ImageID.tolist() == info.ImageID.tolist()
    assert written.ans.between(0, 17).all()
    probs = np.load(str(out) + '.probs.npz')
    assert probs['image_ids'].tolist() == info.ImageID.tolist()
    assert probs['mask'].shape == (len(info), 3) and probs['gender'].shape == (len(info), 2)


def test_tta_changes_probabilities_and_keeps_them_valid(trained):
    df = trained['table'].iloc[:12]
    _, plain = predict_frame(df, [trained['models']], trained['settings'].predict, tta=False)
    _, tta = predict_frame(df, [trained['models']], trained['settings'].predict, tta=True)
    for t in ('mask', 'gender', 'age'):
        assert np.allclose(tta[t].sum(1), 1, atol=1e-4) and (tta[t] >= 0).all()
        assert not np.allclose(tta[t], plain[t], atol=1e-6)


@pytest.mark.parametrize('size,scales,sizes', [(128, None, [128]), (128, (1.0, 1.25), [128, 160]),
                                               (224, (1.25, 1.0, 1.0), [224, 280]), (64, (0.5,), [32])])
def test_view_sizes_are_the_training_size_times_each_scale(size, scales, sizes):
    assert view_sizes(size, scales) == sizes


def test_tta_at_two_scales_is_the_mean_of_each_scale(trained):
    df, ps = trained['table'].iloc[:12], trained['settings'].predict
    def tta_at(*scales): return predict_frame(df, [trained['models']], replace(ps, tta_scales=scales), tta=True)[1]
    one, larger, both = tta_at(1.0), tta_at(1.5), tta_at(1.0, 1.5)
    for t in ('mask', 'gender', 'age'):
        assert not np.allclose(one[t], larger[t], atol=1e-5)     # the larger view really is another input
        assert np.allclose(both[t], (one[t] + larger[t]) / 2, atol=1e-5)


def test_fold_ensemble_averages(trained, tmp_path):
    second = tmp_path / 'fold0-copy'
    shutil.copytree(trained['models'], second)
    df = trained['table'].iloc[:6]
    _, one = predict_frame(df, [trained['models']], trained['settings'].predict, tta=False)
    _, two = predict_frame(df, [trained['models'], second], trained['settings'].predict, tta=False)
    assert all(np.allclose(one[t], two[t], atol=1e-6) for t in one)


def test_evaluate_matches_sklearn(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 18, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 18, 200))
    ids = [f'{i:04d}.jpg' for i in range(200)]
    pd.DataFrame({'ImageID': ids, 'ans': y}).to_csv(tmp_path / 'ans.csv', index=False)
    pd.DataFrame({'ImageID': ids[::-1], 'ans': p[::-1]}).to_csv(tmp_path / 'sub.csv', index=False)   # order-free
    sc = evaluate_files(tmp_path / 'sub.csv', tmp_path / 'ans.csv')
    assert sc.f1 == pytest.approx(f1_score(y, p, average='macro'))
    assert sc.accuracy == pytest.approx((y == p).mean())
    assert sc.task_f1['mask'] == pytest.approx(f1_score(y // 6, p // 6, average='macro'))
    assert sc.per_class.support.sum() == 200 and sc.confusion.sum() == 200


def test_answers_with_labels_outside_0_17(tmp_path):
    pd.DataFrame({'ImageID': ['a', 'b'], 'ans': [3, 18]}).to_csv(tmp_path / 'bad.csv', index=False)
    with pytest.raises(DataError, match=r"bad.csv: row 3: ans 18"): read_labels(tmp_path / 'bad.csv')


def test_tuning_never_lowers_f1():
    rng = np.random.default_rng(1)
    for _ in range(5):
        y = rng.choice(3, 300, p=[0.5, 0.42, 0.08])
        logits = rng.normal(0, 1, (300, 3)) + np.eye(3)[y] * rng.uniform(0.3, 1.5)
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        offsets, before, after = fit_offsets(probs, y)
        assert after >= before
        assert f1_score(y, apply_offsets(probs, offsets).argmax(1), average='macro') == pytest.approx(after)
        assert before == pytest.approx(f1_score(y, probs.argmax(1), average='macro'))


def test_tuning_uses_true_age_groups(trained, tmp_path):
    probs, y = load_oof([trained['models']], 'age')
    labels = np.load(trained['models'] / 'age.valid.npz')['labels']
    assert (y == labels % 3).all() and len(probs) == len(y)
    write_offsets(tmp_path, {'age': [0, 0.5, 1.0]}, {})
    assert read_offsets(tmp_path)['age'].tolist() == [0, 0.5, 1.0]


# --- bad input: a clear error and no submission file ---



def _no_output(trained, models, tmp_path, match):
    out = tmp_path / 'sub.csv'
    with pytest.raises(DataError, match=match):
        predict_eval(trained['settings'], [models], out, tta=False, progress=False)
    assert not out.exists() and not list(tmp_path.glob('*.probs.npz'))


def test_models_folder_missing_a_task(trained, tmp_path):
    models = _copy_models(trained, tmp_path)
    (models / 'gender.json').unlink()
    _no_output(trained, models, tmp_path, 'no gender learner')


def test_mixed_age_boundaries(trained, tmp_path):
    other = _copy_models(trained, tmp_path)
    meta = json.loads((other / 'age.json').read_text())
    (other / 'age.json').write_text(json.dumps({**meta, 'boundary': 58}))
    with pytest.raises(DataError, match='different age boundaries'): check_models([trained['models'], other])


def test_eval_problems_write_nothing(trained, tmp_path):
    import dataclasses
    data = tmp_path / 'data'
    shutil.copytree(trained['root'] / 'data', data)
    s = dataclasses.replace(trained['settings'], paths=dataclasses.replace(trained['settings'].paths, data=data,
                                                                             cache=tmp_path / 'crops'))
    info = pd.read_csv(data / 'eval' / 'info.csv')
    (data / 'eval' / 'images' / info.ImageID[1]).write_bytes(b'garbage')
    out = tmp_path / 'sub.csv'
    with pytest.raises(DataError, match=info.ImageID[1]): predict_eval(s, [trained['models']], out, False,
                                                                       progress=False)
    (data / 'eval' / 'images' / info.ImageID[1]).unlink()
    with pytest.raises(DataError, match='missing'): predict_eval(s, [trained['models']], out, False, progress=False)
    info.rename(columns={'ImageID': 'Image'}).to_csv(data / 'eval' / 'info.csv', index=False)
    with pytest.raises(DataError, match='ImageID'): predict_eval(s, [trained['models']], out, False, progress=False)
    assert not out.exists()


def test_interpret_writes_confusion_and_top_losses(trained, tmp_path):
    from PIL import Image

    from mcls.interpret import interpret_task
    paths = interpret_task(trained['table'], 'age', trained['models'], 0, tmp_path, k=4, workers=0)
    assert [p.name for p in paths] == ['age_fold0_confusion.png', 'age_fold0_top_losses.png']
    assert all(Image.open(p).size[0] > 100 for p in paths)


def test_predict_image_cli(trained):
    from tests.test_cli import cli
    photos = trained['table'].file.tolist()[:2]
    r = cli('predict-image', *photos, '--models', trained['models'], '--set', 'crop.size=64',
            '--set', f"paths.cache={trained['root'] / 'crops'}", cwd=trained['root'])
    assert r.returncode == 0, r.stdout + r.stderr
    for p in photos: assert Path(p).name in r.stdout
    assert re.search(r'(wear|incorrect|not_wear) 0\.\d\d', r.stdout)


def test_tune_and_evaluate_cli(trained, submission, tmp_path):
    from tests.test_cli import cli
    models = _copy_models(trained, tmp_path)
    r = cli('tune', '--models', models, cwd=tmp_path)
    assert r.returncode == 0 and (models / 'tuning.json').exists() and 'F1 after' in r.stdout
    report = json.loads((models / 'tuning.json').read_text())['report']
    assert all(v['f1_after'] >= v['f1_before'] for v in report.values())
    out, _ = submission
    r = cli('evaluate', out, trained['root'] / 'data' / 'eval' / 'answers.csv', '--plot', tmp_path / 'cm.png',
            cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / 'cm.png').exists() and 'macro F1 (18 classes)' in r.stdout


def test_a_new_export_drops_what_was_fitted_on_the_old_learners(trained, tmp_path):
    "tuning.json describes the learners it was fitted on: a re-export must not keep it."
    import shutil
    d = tmp_path / 'fold0'
    shutil.copytree(trained['models'], d)
    (d / 'tuning.json').write_text('{"offsets": {}}')
    train_task(trained['table'], trained['settings'], 'mask', 0, export_dir=d, progress=False)
    assert not (d / 'tuning.json').exists()


def test_one_bad_eval_photo_is_a_one_line_error_naming_it(synth_root):
    info = load_eval(synth_root / 'data')
    Image.new('1', (12_000, 16_000)).save(info.file[2], format='PNG')
    r = _cli('crop', '--data', synth_root / 'data', '--split', 'eval', '--set', 'crop.size=64', cwd=synth_root)
    assert r.returncode == 2 and info.file[2] in ' '.join(r.stderr.split()) and 'Traceback' not in r.stderr

