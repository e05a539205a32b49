"""Faults and hostile input: each test holds one guarantee of docs/reliability.md. Kills are simulated by raising
inside a writer, short writes by `ulimit -f`."""
import errno
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mcls.atomic import atomic_dir, recover_dir, remove_stray
from mcls.crop import crop_images
from mcls.dataset import load_eval, load_train
from mcls.errors import ConfigError, DataError, WriteError
from mcls.export import load_task_learner, read_meta
from mcls.images import open_rgb
from mcls.train import resume_task, save_atomic, train_task, training_table
from tests.conftest import kill_after_first_epoch, tiny_settings

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    "A pid no process has: what a killed writer leaves in its temporary names."
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        pid += 1


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _cli(*args, cwd, limit_kb: int | None = None):
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'NO_ALBUMENTATIONS_UPDATE': '1'}
    cmd = ' '.join(f"'{a}'" for a in (sys.executable, ROOT / 'cli.py', *args))
    if limit_kb: cmd = f'ulimit -f {limit_kb}; {cmd}'
    return subprocess.run(['bash', '-c', cmd], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


# --- (a) complete and valid or absent ---

def test_short_writes_never_enter_the_crop_cache(synth_root):
    "item 1: under a file-size limit, crop fails with one line (exit 2) and every cache entry decodes whole."
    r = _cli('crop', '--data', synth_root / 'data', '--set', 'crop.size=64', '--set', f'paths.cache={synth_root / "c"}',
             cwd=synth_root, limit_kb=1)
    assert r.returncode == 2 and 'error:' in r.stderr and 'free space' in r.stderr, r.stderr
    entries = [p for p in (synth_root / 'c').rglob('*.jpg')]
    for p in entries:
        with Image.open(p) as im:
            im.load()
            assert im.size == (64, 64)
    assert not list((synth_root / 'c').rglob('*.tmp'))


def test_kill_while_writing_a_checkpoint_keeps_the_last_epoch(synth_root, monkeypatch):
    "item 2: a kill while epoch 1's checkpoint is half-written: the run resumes from epoch 0's file and exports."
    import fastai.learner
    s = tiny_settings(synth_root, gender__epochs=3)
    table = training_table(s, progress=False)
    real_save, saves = fastai.learner.torch.save, []

    def dying_save(obj, f, *a, **k):
        saves.append(str(f))
        if '.last-1.' in str(f):       # half of the file, then the process dies
            Path(f).write_bytes(b'\x80\x02' + b'\0' * 100)
            raise KeyboardInterrupt
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(fastai.learner.torch, 'save', dying_save)
    with pytest.raises(KeyboardInterrupt): train_task(table, s, 'gender', 0, progress=False)
    monkeypatch.setattr(fastai.learner.torch, 'save', real_save)
    run = next((synth_root / 'runs').iterdir())
    state = json.loads((run / 'last_epoch.json').read_text())
    assert state == {**state, 'epoch': 0, 'file': 'last-0'}
    torch.load(run / 'last-0.pth', weights_only=False)           # whole
    assert json.loads((run / 'run.json').read_text())['status'] == 'interrupted'
    r = resume_task(run, progress=False)
    assert r.export_dir == s.paths.models / 'fold0' and (r.export_dir / 'gender.safetensors').exists()
    assert pd.read_csv(run / 'history.csv').epoch.tolist() == [0, 1, 2]
    assert not list(run.glob('.*.tmp*')) and [p.name for p in run.glob('last-*.pth')] == ['last-2.pth']


def test_failed_checkpoint_write_is_one_clear_error(trained, tmp_path, monkeypatch):
    "item 10: a full disk during a checkpoint is a WriteError naming the file, and no file appears."
    import fastai.learner
    learn = load_task_learner(trained['models'], 'mask')
    learn.path = tmp_path

    def full_disk(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(fastai.learner.torch, 'save', full_disk)
    with pytest.raises(WriteError, match=r'last-3\.pth.*free disk space'): save_atomic(learn, 'last-3', True)
    assert not list(tmp_path.iterdir())


def _copy_models(trained, tmp_path) -> Path:
    d = tmp_path / 'models'
    shutil.copytree(trained['models'], d)
    return d


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


def test_history_with_a_cut_off_line_is_read(trained):
    from mcls.train import _keep_history
    run = trained['results']['mask'].run_dir
    h = run.parent / 'cut' / 'history.csv'
    h.parent.mkdir(exist_ok=True)
    lines = (run / 'history.csv').read_text().splitlines()
    h.write_text('\n'.join([*lines, '1,0.5']))          # killed while appending epoch 1
    _keep_history(h, 1)
    assert pd.read_csv(h).epoch.tolist() == [0]


# --- (b) one bad photo: skipped in training, an error in eval ---

def _bad_photo_cases(d: Path) -> dict[str, Path]:
    "One photo of each kind the fault pass found, written over photos of the synthetic set."
    folders = sorted((d / 'train' / 'images').iterdir())
    cases = {k: next(f.glob(f'{stem}.*')) for k, f, stem in (('tiny', folders[0], 'mask1'), ('bomb', folders[1],
                                                                                             'mask2'),
                                                             ('garbage', folders[2], 'mask3'))}
    Image.new('RGB', (10, 10), (120, 90, 80)).save(cases['tiny'],
                                                   format='PNG' if cases['tiny'].suffix == '.png' else 'JPEG')
    Image.new('1', (12_000, 16_000)).save(cases['bomb'], format='PNG')      # 192 MP in a few kB, whatever its name
    cases['garbage'].write_bytes(b'\xff\xd8 not really a jpeg')
    return cases


def test_one_bad_photo_is_skipped_in_training_and_listed_in_the_run(synth_root):
    "item 8, (b): a 10x10 photo is cropped (centre fallback); a decompression bomb and garbage are skipped, named."
    cases = _bad_photo_cases(synth_root / 'data')
    s = tiny_settings(synth_root)
    table = training_table(s, progress=False)
    assert str(cases['tiny']) in set(table.file)
    skipped = dict(table.attrs['skipped'])
    assert {str(cases['bomb']), str(cases['garbage'])} <= set(skipped)
    assert 'DecompressionBomb' in skipped[str(cases['bomb'])]
    r = train_task(table, s, 'mask', 0, progress=False)
    listed = pd.read_csv(r.run_dir / 'skipped.csv')
    assert {str(cases['bomb']), str(cases['garbage'])} <= set(listed.file)


def test_one_bad_eval_photo_is_a_one_line_error_naming_it(synth_root):
    info = load_eval(synth_root / 'data')
    Image.new('1', (12_000, 16_000)).save(info.file[2], format='PNG')
    r = _cli('crop', '--data', synth_root / 'data', '--split', 'eval', '--set', 'crop.size=64', cwd=synth_root)
    assert r.returncode == 2 and info.file[2] in ' '.join(r.stderr.split()) and 'Traceback' not in r.stderr


def test_sixteen_bit_grey_png_keeps_its_picture(tmp_path):
    "item 6: PIL's convert clips 16-bit grey to white; the photo must keep its tones."
    ramp = np.tile(np.linspace(0, 65535, 64), (64, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / 'g16.png')
    rgb = np.asarray(open_rgb(tmp_path / 'g16.png'))
    assert rgb.shape == (64, 64, 3) and rgb[:, 0].max() < 5 and rgb[:, -1].min() > 250
    assert abs(rgb.mean() - 127.5) < 3


def test_ten_pixel_photo_is_cropped_for_predict_image(tmp_path):
    s = tiny_settings(tmp_path)
    Image.new('RGB', (10, 10), (120, 90, 80)).save(tmp_path / 'tiny.jpg')
    out, st = crop_images([str(tmp_path / 'tiny.jpg')], s.crop, tmp_path / 'cache', strict=True, progress=False)
    assert st.fallbacks == 1 and Image.open(out[str(tmp_path / 'tiny.jpg')]).size == (64, 64)


# --- (c) a kill at any moment: --resume finishes (or restarts) and exports ---

class Crash(Exception): pass


def test_kill_before_the_first_epoch_ends_restarts_on_resume(synth_root, monkeypatch):
    "item 5: nothing saved yet; --resume restarts the run in its own folder and exports it."
    import mcls.train as T
    s = tiny_settings(synth_root)
    table = training_table(s, progress=False)

    def killed(*a, **k): raise KeyboardInterrupt
    real_fit = T._fit
    monkeypatch.setattr(T, '_fit', killed)
    with pytest.raises(KeyboardInterrupt): train_task(table, s, 'age', 0, progress=False)
    monkeypatch.setattr(T, '_fit', real_fit)
    run = next((synth_root / 'runs').iterdir())
    r = resume_task(run, progress=False)
    assert r.run_dir == run and json.loads((run / 'run.json').read_text())['status'] == 'done'
    assert (s.paths.models / 'fold0' / 'age.safetensors').exists()


def test_kill_in_the_second_phase_of_fine_tune_resumes_there(synth_root, monkeypatch):
    "(c): fit = fine_tune, killed in the unfrozen phase: resumes at that epoch, unfrozen, one history."
    import mcls.train as T
    from fastai.vision.all import Callback
    s = tiny_settings(synth_root, mask__epochs=3, mask__fit='fine_tune', mask__freeze_epochs=1)
    table = training_table(s, progress=False)

    class CrashInEpoch2(Callback):
        order = 99
        def before_epoch(self):
            if self.epoch == 2: raise Crash('killed')

    real_cbs = T._fit_cbs
    monkeypatch.setattr(T, '_fit_cbs', lambda *a: [*real_cbs(*a), CrashInEpoch2()])
    with pytest.raises(Crash): train_task(table, s, 'mask', 0, progress=False)
    monkeypatch.setattr(T, '_fit_cbs', real_cbs)
    run = next((synth_root / 'runs').iterdir())
    assert json.loads((run / 'last_epoch.json').read_text())['epoch'] == 1
    frozen = []
    real_fit = T._fit

    def watching_fit(learn, ts, epochs, cbs, start_epoch=0):
        class Watch(Callback):
            order = 99
            def before_epoch(self):
                if self.epoch >= start_epoch: frozen.append(all(p.requires_grad for p in self.learn.model.parameters()))
        real_fit(learn, ts, epochs, [*cbs, Watch()], start_epoch)

    monkeypatch.setattr(T, '_fit', watching_fit)
    resume_task(run, progress=False)
    assert frozen == [True]             # epoch 2 ran with every layer trainable
    assert pd.read_csv(run / 'history.csv').epoch.tolist() == [0, 1, 2]
    assert (s.paths.models / 'fold0' / 'mask.safetensors').exists()


def test_resume_with_a_run_resumes_that_run_once(tmp_path, monkeypatch):
    "item 5: `train all --resume --run R` resumed R three times; without --run, finished runs are left alone."
    import dataclasses
    import mcls.cli as C
    import mcls.train as T
    s = tiny_settings(tmp_path)
    s = dataclasses.replace(s, paths=dataclasses.replace(s.paths, runs=tmp_path / 'runs'))
    for name, status in (('20260101-000000-mask-fold0', 'done'), ('20260101-000100-age-fold0', 'interrupted')):
        (tmp_path / 'runs' / name).mkdir(parents=True)
        (tmp_path / 'runs' / name / 'run.json').write_text(json.dumps({'status': status}))
    calls = []
    monkeypatch.setattr(T, 'resume_task', lambda run, *a, **k: calls.append(Path(run).name) or 'result')
    assert C._resume(s, ['mask', 'age', 'gender'], Path('runs/R'), None, None) == ['result'] and calls == ['R']
    calls.clear()
    assert C._resume(s, ['mask', 'age', 'gender'], None, None, None) == ['result']
    assert calls == ['20260101-000100-age-fold0']


# --- (d) nothing unpickled unless asked ---

class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ['MCLS_TEST_MARKER']),))


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


# --- (e) photos inside the data folder ---

def test_an_absolute_path_in_train_csv_is_refused(synth_root, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp('elsewhere')
    csv = synth_root / 'data' / 'train' / 'train.csv'
    df = pd.read_csv(csv, dtype=str)
    shutil.copytree(synth_root / 'data' / 'train' / 'images' / df.path[0], elsewhere / 'p')
    df.loc[0, 'path'] = str(elsewhere / 'p')
    df.to_csv(csv, index=False)
    with pytest.raises(DataError, match=r'row 2 .*leads outside .*train.images'): load_train(synth_root / 'data')


def test_symlinked_photo_out_of_the_folder_is_refused(synth_root, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp('elsewhere')
    photo = next(next((synth_root / 'data' / 'train' / 'images').iterdir()).glob('normal.*'))
    shutil.move(photo, elsewhere / photo.name)
    photo.symlink_to(elsewhere / photo.name)
    with pytest.raises(DataError, match=f'{photo.name} leads outside'): load_train(synth_root / 'data')


def test_an_eval_id_climbing_out_is_refused(synth_root):
    p = synth_root / 'data' / 'eval' / 'info.csv'
    info = pd.read_csv(p)
    info.loc[1, 'ImageID'] = '../../../elsewhere.jpg'
    info.to_csv(p, index=False)
    with pytest.raises(DataError, match='row 3'): load_eval(synth_root / 'data')


# --- (f) user-caused failures: one line on stderr, exit 2 ---

def test_two_photos_with_one_stem_are_refused(synth_root):
    "item 13: mask1.jpg and mask1.png would both be used as mask1."
    d = next((synth_root / 'data' / 'train' / 'images').iterdir())
    first = next(d.glob('mask1.*'))
    shutil.copy(first, d / ('mask1.jpeg' if first.suffix != '.jpeg' else 'mask1.png'))
    with pytest.raises(DataError, match='two photos named mask1'): load_train(synth_root / 'data')


def test_header_only_train_csv(synth_root):
    (synth_root / 'data' / 'train' / 'train.csv').write_text('id,gender,race,age,path\n')
    r = _cli('train', 'mask', '--data', synth_root / 'data', '--no-pretrained', cwd=synth_root)
    assert r.returncode == 2 and 'no persons' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize('make', ['garbage', 'other_arch'])
def test_bad_weights_are_refused_before_any_work(tmp_path, make):
    import timm
    from safetensors.torch import save_file
    from mcls.learner import check_task_settings
    w = tmp_path / 'w.safetensors'
    if make == 'garbage': w.write_bytes(b'\x00' * 64)
    else: save_file(timm.create_model('test_vit').state_dict(), str(w))
    s = tiny_settings(tmp_path, train__pretrained='true', train__weights=str(w))
    with pytest.raises(ConfigError, match='not ImageNet weights for test_efficientnet'):
        check_task_settings(s.tasks['mask'])


def test_stray_temporaries_of_dead_writers_are_removed(tmp_path):
    "item 13: kills leave `.name.<pid>.tmp`; those of live processes stay."
    dead, live = tmp_path / f'.a.jpg.{_dead_pid()}.tmp', tmp_path / f'.b.jpg.{os.getppid()}.tmp'
    dead.write_bytes(b'x'); live.write_bytes(b'x')
    assert remove_stray(tmp_path) == 1 and not dead.exists() and live.exists()


def test_stray_temporary_in_the_crop_cache_is_cleaned(synth_root):
    s = tiny_settings(synth_root)
    files = load_train(synth_root / 'data').file.tolist()[:3]
    crop_images(files[:1], s.crop, s.paths.cache, progress=False)
    sub = next(p for p in s.paths.cache.iterdir() if p.is_dir())
    stray = sub / f'.x.face.jpg.{_dead_pid()}.tmp'
    stray.write_bytes(b'half')
    crop_images(files, s.crop, s.paths.cache, progress=False)
    assert not stray.exists()


def test_only_mcls_errors_become_one_line(monkeypatch, capsys):
    "A bug keeps its traceback (exit 1 through typer's handler); a user error is one stderr line and exit 2."
    import mcls.cli as C

    def bug(**kw): raise RuntimeError('a bug')
    monkeypatch.setattr(C, 'app', bug)
    with pytest.raises(RuntimeError): C.run()

    def user(**kw): raise DataError('train.csv: not found. Point --data at the layout.')
    monkeypatch.setattr(C, 'app', user)
    with pytest.raises(SystemExit) as e: C.run()
    err = capsys.readouterr()
    assert e.value.code == 2 and err.err.strip().startswith('error:') and not err.out
    assert len(err.err.strip().splitlines()) == 1


def test_cut_short_cache_entry_from_an_older_version_is_cropped_again(synth_root):
    s = tiny_settings(synth_root)
    files = load_train(synth_root / 'data').file.tolist()[:2]
    first, _ = crop_images(files, s.crop, s.paths.cache, progress=False)
    p = first[files[0]]
    p.write_bytes(p.read_bytes()[:200])
    again, st = crop_images(files, s.crop, s.paths.cache, progress=False)
    assert st.cached == 1 and st.cropped == 1
    with Image.open(again[files[0]]) as im: im.load()


def test_csv_headers_with_a_byte_order_mark_and_an_empty_info_csv(synth_root):
    csv = synth_root / 'data' / 'train' / 'train.csv'
    csv.write_bytes(b'\xef\xbb\xbf' + csv.read_bytes())
    assert len(load_train(synth_root / 'data'))
    (synth_root / 'data' / 'eval' / 'info.csv').write_text('ImageID,ans\n')
    with pytest.raises(DataError, match='info.csv: no rows'): load_eval(synth_root / 'data')


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


def test_folder_or_a_vanished_photo_is_skipped_not_a_traceback(synth_root):
    "A folder named like a photo, and a photo deleted between listing and cropping."
    d = sorted((synth_root / 'data' / 'train' / 'images').iterdir())
    gone = next(d[1].glob('normal.*'))
    photo = next(d[0].glob('mask4.*'))
    photo.unlink()
    photo.mkdir()
    train = load_train(synth_root / 'data')
    assert str(photo) not in set(train.file)
    gone.unlink()
    s = tiny_settings(synth_root)
    out, st = crop_images(train.file.tolist(), s.crop, s.paths.cache, progress=False)
    assert str(gone) not in out and st.skipped['unreadable image'] == 1
    with pytest.raises(DataError, match=gone.name): crop_images([str(gone)], s.crop, s.paths.cache, strict=True)


def test_submission_path_that_is_a_folder_is_one_clear_error(tmp_path):
    from mcls.atomic import write_csv_atomic
    (tmp_path / 'sub.csv').mkdir()
    with pytest.raises(WriteError, match='in the way'): write_csv_atomic(pd.DataFrame({'a': [1]}), tmp_path / 'sub.csv')
    assert (tmp_path / 'sub.csv').is_dir() and [p.name for p in tmp_path.iterdir()] == ['sub.csv']


def test_cache_path_that_is_a_file_is_one_line(synth_root):
    (synth_root / 'cachefile').write_text('x')
    r = _cli('crop', '--data', synth_root / 'data', '--set', 'crop.size=64', '--split', 'eval',
             '--set', f'paths.cache={synth_root / "cachefile"}', cwd=synth_root)
    assert r.returncode == 2 and 'in the way' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_checkpoint_that_cannot_be_loaded_restarts_the_run(synth_root, monkeypatch):
    "(c): last_epoch.json names a file that is damaged (e.g. written by an older version in place): restart, export."
    s = tiny_settings(synth_root, age__epochs=2)
    kill_after_first_epoch(monkeypatch, training_table(s, progress=False), s, 'age', 0)
    run = next((synth_root / 'runs').iterdir())
    (run / 'last-0.pth').write_bytes(b'\x80\x02 cut short')
    r = resume_task(run, progress=False)
    assert pd.read_csv(run / 'history.csv').epoch.tolist() == [0, 1]
    assert json.loads((run / 'run.json').read_text())['status'] == 'done' and r.export_dir is not None
