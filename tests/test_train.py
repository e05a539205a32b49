import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fastai.vision.all import Callback, CancelTrainException

from mcls.dataset import load_train
from mcls.errors import ConfigError, DataError, WriteError
from mcls.export import load_task_learner, rebuild_learner
from mcls.runs import list_runs
from mcls.train import resume_task, save_atomic, train_task, training_table
from tests.conftest import kill_after_first_epoch, tiny_settings
from tests.helpers import Crash, _bad_photo_cases

TASKS = ('mask', 'age', 'gender')


@pytest.mark.parametrize('task', TASKS)
def test_one_epoch_trains_exports_and_records(trained, task):
    r = trained['results'][task]
    assert 0 <= r.valid_f1 <= 1 and 0 <= r.valid_acc <= 1 and r.images_per_s > 0
    for suffix in ('pkl', 'safetensors', 'json', 'settings.ini', 'valid.npz'):
        assert (trained['models'] / f'{task}.{suffix}').exists()
    hist = pd.read_csv(r.run_dir / 'history.csv')
    assert hist.epoch.tolist() == [0] and 'f1_score' in hist.columns
    assert (r.run_dir / 'best.pth').exists() and (r.run_dir / 'settings.ini').exists()
    assert json.loads((r.run_dir / 'run.json').read_text())['status'] == 'done'


def test_exported_learner_has_no_training_callbacks(trained):
    learn = load_task_learner(trained['models'], 'mask')
    names = {type(cb).__name__ for cb in learn.cbs}
    assert not names & {'CSVLogger', 'SaveModelCallback', 'SaveLastCallback', 'MixedPrecision'}


def _probs_here(model_dir, task, crops):
    learn = load_task_learner(model_dir, task)
    return learn.get_preds(dl=learn.dls.test_dl(pd.DataFrame({'crop': crops})))[0].numpy()


@pytest.mark.parametrize('task', TASKS)
def test_reload_in_fresh_process_gives_same_probs_and_runs_tta(trained, task, tmp_path):
    crops = trained['table'].crop.tolist()[:10]
    here = _probs_here(trained['models'], task, crops)
    script = f'''
import numpy as np, pandas as pd, pickle, sys
from fastai.vision.all import load_learner
from mcls.learner import item_tfms, batch_tfms
learn = load_learner({str(trained['models'] / f'{task}.pkl')!r})
dl = learn.dls.test_dl(pd.DataFrame({{'crop': {crops!r}}}))
p = learn.get_preds(dl=dl)[0].numpy()
t = learn.tta(dl=dl, n=2, item_tfms=item_tfms(64, 'tta_light'), batch_tfms=batch_tfms('test_efficientnet'))[0].numpy()
np.savez({str(tmp_path / 'out.npz')!r}, p=p, t=t)
'''
    subprocess.run([sys.executable, '-c', script], check=True, capture_output=True)
    out = np.load(tmp_path / 'out.npz')
    np.testing.assert_allclose(out['p'], here, atol=1e-5)
    assert out['t'].shape == here.shape and np.allclose(out['t'].sum(1), 1, atol=1e-4)


def test_rebuild_without_unpickling_matches(trained):
    crops = trained['table'].crop.tolist()[:10]
    learn = rebuild_learner(trained['models'], 'age')
    rebuilt = learn.get_preds(dl=learn.dls.test_dl(pd.DataFrame({'crop': crops})))[0].numpy()
    np.testing.assert_allclose(rebuilt, _probs_here(trained['models'], 'age', crops), atol=1e-5)


def test_splitter_leaks_no_person(trained):
    from mcls.learner import task_dls
    t = trained['table']
    dls = task_dls(t.assign(is_valid=t.fold == 1), trained['settings'].tasks['gender'])
    train_people = set(dls.train.items.person)
    valid_people = set(dls.valid.items.person)
    assert valid_people and not train_people & valid_people
    assert len(dls.train.items) + len(dls.valid.items) == len(t)


def test_age_boundary_changes_training_targets_only(synth_root):
    from mcls.learner import task_targets
    s = tiny_settings(synth_root, age__boundary=58)
    df = pd.DataFrame({'age': [57, 58, 59, 60, 58], 'age_group': [1, 1, 1, 2, 1],
                       'is_valid': [False, False, False, False, True]})
    assert task_targets(df, s.tasks['age']).age_target.tolist() == [1, 2, 2, 2, 1]




class CrashAfterFirstEpoch(Callback):
    order = 99

    def after_epoch(self):
        raise Crash('killed')


def test_resume_continues_at_the_right_epoch(synth_root, monkeypatch):
    import mcls.train as T
    s = tiny_settings(synth_root, gender__epochs=3)
    table = training_table(s, progress=False)
    real_cbs, real_fit, started = T._fit_cbs, T._fit, []
    monkeypatch.setattr(T, '_fit_cbs', lambda *a: [*real_cbs(*a), CrashAfterFirstEpoch()])
    with pytest.raises(Crash): train_task(table, s, 'gender', 0, progress=False)
    run = next((synth_root / 'runs').iterdir())
    assert json.loads((run / 'last_epoch.json').read_text())['epoch'] == 0

    def recording_fit(learn, ts, epochs, cbs, start_epoch=0):
        started.append(start_epoch)
        real_fit(learn, ts, epochs, cbs, start_epoch)

    monkeypatch.setattr(T, '_fit_cbs', real_cbs)
    monkeypatch.setattr(T, '_fit', recording_fit)
    r = resume_task(run, progress=False)
    assert started == [1]
    assert pd.read_csv(run / 'history.csv').epoch.tolist() == [0, 1, 2]
    assert r.valid_f1 is not None and json.loads((run / 'run.json').read_text())['status'] == 'done'


def test_runs_are_listed_best_first(trained):
    df = list_runs(trained['root'] / 'runs')
    assert len(df) >= 3 and df.valid_f1.is_monotonic_decreasing


def test_full_training_needs_no_validation(synth_root):
    s = tiny_settings(synth_root)
    table = training_table(s, progress=False)
    r = train_task(table, s, 'mask', None, export_dir=synth_root / 'models' / 'full', progress=False)
    assert r.valid_f1 is None and (synth_root / 'models' / 'full' / 'mask.pkl').exists()
    assert r.run_dir.name.endswith('mask-full')


def test_a_run_that_fails_says_so_with_the_error(trained, monkeypatch):
    from mcls import train as train_mod

    def boom(*a, **k): raise RuntimeError('disk on fire')
    monkeypatch.setattr(train_mod, '_fit', boom)
    with pytest.raises(RuntimeError, match='disk on fire'):
        train_task(trained['table'], trained['settings'], 'mask', 0, progress=False)
    runs = sorted((trained['root'] / 'runs').glob('*-mask-fold0'))
    meta = json.loads((runs[-1] / 'run.json').read_text())
    assert meta['status'] == 'failed' and 'disk on fire' in meta['error']
    assert list_runs(trained['root'] / 'runs').query('status == "failed"').shape[0] >= 1


def test_fewer_training_photos_than_a_batch_is_refused_before_any_run(trained):
    small = trained['table'][trained['table'].person.isin(trained['table'].person.unique()[:2])]
    before = set((trained['root'] / 'runs').iterdir())
    with pytest.raises(ConfigError, match="draws only .* training photos .*: lower --batch"):
        train_task(small, trained['settings'], 'mask', None, progress=False)
    assert set((trained['root'] / 'runs').iterdir()) == before


def test_one_line_per_epoch_with_the_best_so_far_marked(synth_root, capsys):
    "a log (not a terminal): each epoch one line of 4-decimal figures, `best` where the checkpoint was kept"
    s = tiny_settings(synth_root, mask__epochs=3, mask__lr=1e-2)
    r = train_task(training_table(s, progress=False), s, 'mask', 0, progress=True)
    out = capsys.readouterr().out
    assert 'Better model found' not in out
    lines = [l for l in out.splitlines() if ': epoch ' in l]
    assert [l.split(': epoch ')[1].split()[0] for l in lines] == ['0', '1', '2']
    f1 = pd.read_csv(r.run_dir / 'history.csv').f1_score.to_numpy()
    best = [bool(i == 0 or v > f1[:i].max()) for i, v in enumerate(f1)]
    assert [l.endswith('  best') for l in lines] == best
    for l in lines:
        assert all(len(v.split('.')[1]) == 4 for v in l.split() if v.replace('.', '').isdigit() and '.' in v)


# --- what a resumed run remembers ---

def test_a_resumed_run_exports_where_it_was_started_to(synth_root, monkeypatch):
    import mcls.train as T
    s = tiny_settings(synth_root, joint__epochs=2)
    table = training_table(s, progress=False)
    seed2 = synth_root / 'models' / 'seed2' / 'fold0'
    real_cbs = T._fit_cbs
    monkeypatch.setattr(T, '_fit_cbs', lambda *a: [*real_cbs(*a), CrashAfterFirstEpoch()])
    with pytest.raises(Crash): train_task(table, s, 'joint', 0, export_dir=seed2, progress=False)
    monkeypatch.setattr(T, '_fit_cbs', real_cbs)
    run = next((synth_root / 'runs').iterdir())
    assert json.loads((run / 'run.json').read_text())['export'] == str(seed2)     # recorded when the run started
    r = resume_task(run, progress=False)
    assert r.export_dir == seed2 and (seed2 / 'joint.json').exists()
    assert not (synth_root / 'models' / 'fold0').exists()          # the default folder's learner left alone


# --- what an epoch must contain; the photos it showed ---

@pytest.mark.parametrize('photos_per_person', ['all', '3'])
def test_images_per_second_counts_the_photos_each_epoch_drew(synth_root, photos_per_person):
    from mcls.learner import epoch_photos
    s = tiny_settings(synth_root, joint__epochs=3, joint__batch=8, joint__photos_per_person=photos_per_person)
    table = training_table(s, progress=False)
    r = train_task(table, s, 'joint', 0, progress=False)
    drawn = epoch_photos(table[table.fold != 0], s.tasks['joint'])
    shown = drawn // 8 * 8                           # fastai drops the last partial batch
    assert drawn < (table.fold != 0).sum() if photos_per_person == '3' else drawn == (table.fold != 0).sum()
    meta = json.loads((r.run_dir / 'run.json').read_text())
    warm = meta['epoch_seconds'][1:]
    assert meta['train_images_per_s'] * sum(warm) == pytest.approx(shown * len(warm))
    assert meta['images_per_s'] * meta['seconds'] == pytest.approx(shown * 3)


@pytest.mark.parametrize('ranks, photos_per_person', [(1, '3'), (2, 'all')])
def test_a_batch_larger_than_an_epoch_draws_per_rank_is_refused_before_any_run(synth_root, monkeypatch, ranks,
                                                                                   photos_per_person):
    import mcls.distributed as D
    from mcls.learner import epoch_photos
    s = tiny_settings(synth_root, joint__photos_per_person=photos_per_person)
    table = training_table(s, progress=False)
    per_rank = -(-epoch_photos(table[table.fold != 0], s.tasks['joint']) // ranks)
    assert per_rank < (table.fold != 0).sum()        # the table alone would pass the check
    s = tiny_settings(synth_root, joint__photos_per_person=photos_per_person, joint__batch=per_rank + 1)
    monkeypatch.setattr(D, 'world_size', lambda: ranks)
    with pytest.raises(ConfigError, match=f'an epoch draws only {per_rank} training photos'):
        train_task(table, s, 'joint', 0, progress=False)
    assert not (synth_root / 'runs').exists() or not any((synth_root / 'runs').iterdir())


def test_an_epoch_without_a_batch_is_a_failed_run_not_an_export(synth_root, monkeypatch):
    import mcls.train as T
    s = tiny_settings(synth_root)
    table = training_table(s, progress=False)

    class NoBatches(Callback):       # what a loader that yields nothing leaves: an epoch that showed no photo
        order = 2      # after TrainTimer has started the epoch
        def before_train(self): raise CancelTrainException()
    real_cbs = T._fit_cbs
    monkeypatch.setattr(T, '_fit_cbs', lambda *a: [*real_cbs(*a), NoBatches()])
    with pytest.raises(T.TrainingFailed, match='no full batch'):
        train_task(table, s, 'joint', 0, export_dir=synth_root / 'models' / 'fold0', progress=False)
    run = next((synth_root / 'runs').iterdir())
    assert json.loads((run / 'run.json').read_text())['status'] == 'failed'
    assert not (synth_root / 'models' / 'fold0').exists()


# --- non-finite numbers between a setting and a submission ---

@pytest.mark.parametrize('full', [False, True])
def test_a_diverged_training_is_a_failed_run_not_an_export(synth_root, full):
    from mcls.train import TrainingFailed
    s = tiny_settings(synth_root, joint__lr=1e4, joint__epochs=2, joint__full_epochs=2)
    table = training_table(s, progress=False)
    dest = synth_root / 'models' / 'x'
    with pytest.raises(TrainingFailed, match='diverged.*lower the peak rate'):
        train_task(table, s, 'joint', None if full else 0, export_dir=dest, progress=False)
    run = next((synth_root / 'runs').iterdir())
    assert json.loads((run / 'run.json').read_text())['status'] == 'failed' and not dest.exists()


def test_a_learner_with_non_finite_weights_writes_no_submission(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    from mcls.errors import DataError
    from mcls.predict import predict_eval
    d = tmp_path / 'nan'
    shutil.copytree(trained['models'], d)
    w = load_file(d / 'age.safetensors')
    name = next(k for k, v in w.items() if v.is_floating_point() and v.ndim == 2)    # the head's weights
    w[name][:] = float('nan')
    save_file(w, d / 'age.safetensors')
    with pytest.raises(DataError, match='age learner gives non-finite probabilities'):
        predict_eval(trained['settings'], [d], tmp_path / 'sub.csv', tta=False, progress=False)
    assert not (tmp_path / 'sub.csv').exists()


def test_resume_refuses_when_the_corrections_changed(synth_root, monkeypatch):
    from mcls.train import resume_task, training_table
    fixes = synth_root / 'fixes.csv'
    first = load_train(synth_root / 'data').person.iloc[0]
    fixes.write_text(f'key,field,value\n{first},age,40\n')
    s = tiny_settings(synth_root, paths__corrections=fixes, gender__epochs=2)
    kill_after_first_epoch(monkeypatch, training_table(s, progress=False), s, 'gender', 0)
    run = next((synth_root / 'runs').iterdir())
    others = load_train(synth_root / 'data').person.drop_duplicates().iloc[1:6]
    fixes.write_text('key,field,value\n' + ''.join(f'{p},gender,female\n' for p in others))
    with pytest.raises(DataError, match='changed since this run started'): resume_task(run, progress=False)
    fixes.write_text(f'key,field,value\n{first},age,40\n')          # restored: the run resumes
    assert resume_task(run, progress=False).epochs == 2


def test_a_failed_checkpoint_write_is_one_error_and_no_temporary(trained, tmp_path, monkeypatch):
    import fastai.learner

    from mcls.export import load_task_learner
    from mcls.train import save_atomic
    learn = load_task_learner(trained['models'], 'mask')
    learn.path = tmp_path

    def short_write(obj, f, *a, **k):     # torch's zip writer under `ulimit -f`: half a file, then its own error
        Path(f).write_bytes(b'PK' + b'\0' * 64)
        raise RuntimeError('[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0: file write failed')

    monkeypatch.setattr(fastai.learner.torch, 'save', short_write)
    with pytest.raises(WriteError, match=r'last-0\.pth.*free disk space'): save_atomic(learn, 'last-0', True)
    assert list(tmp_path.iterdir()) == []


def test_a_full_runs_disk_ends_the_run_failed_with_the_real_reason(synth_root, monkeypatch):
    "the checkpoint fails, then run.json cannot be copied either: the run is still marked failed, naming the checkpoint"
    import fastai.learner

    from mcls import runs
    from mcls.train import train_task, training_table
    s = tiny_settings(synth_root)
    table = training_table(s, progress=False)
    full = {'on': False}
    real_atomic = runs.write_text_atomic

    def disk(obj, f, *a, **k):
        full['on'] = True
        raise OSError(errno.ENOSPC, 'No space left on device')

    def no_room_for_a_copy(path, text):
        if full['on']: raise WriteError(f'{path}: could not be written (No space left on device)')
        return real_atomic(path, text)

    monkeypatch.setattr(fastai.learner.torch, 'save', disk)
    monkeypatch.setattr(runs, 'write_text_atomic', no_room_for_a_copy)
    with pytest.raises(WriteError, match=r'(best|last-0)\.pth'): train_task(table, s, 'mask', 0, progress=False)
    run = next((synth_root / 'runs').iterdir())
    meta = json.loads((run / 'run.json').read_text())
    assert meta['status'] == 'failed' and '.pth: could not be written' in meta['error']
    assert list_runs(synth_root / 'runs').reason[0].startswith('WriteError')


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


def test_history_with_a_cut_off_line_is_read(trained):
    from mcls.train import _keep_history
    run = trained['results']['mask'].run_dir
    h = run.parent / 'cut' / 'history.csv'
    h.parent.mkdir(exist_ok=True)
    lines = (run / 'history.csv').read_text().splitlines()
    h.write_text('\n'.join([*lines, '1,0.5']))          # killed while appending epoch 1
    _keep_history(h, 1)
    assert pd.read_csv(h).epoch.tolist() == [0]


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
    from fastai.vision.all import Callback

    import mcls.train as T
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


def test_checkpoint_that_cannot_be_loaded_restarts_the_run(synth_root, monkeypatch):
    "(c): last_epoch.json names a file that is damaged (e.g. written by an older version in place): restart, export."
    s = tiny_settings(synth_root, age__epochs=2)
    kill_after_first_epoch(monkeypatch, training_table(s, progress=False), s, 'age', 0)
    run = next((synth_root / 'runs').iterdir())
    (run / 'last-0.pth').write_bytes(b'\x80\x02 cut short')
    r = resume_task(run, progress=False)
    assert pd.read_csv(run / 'history.csv').epoch.tolist() == [0, 1]
    assert json.loads((run / 'run.json').read_text())['status'] == 'done' and r.export_dir is not None


def test_train_prints_the_centre_crop_fallback_share(synth_root):
    from rich.console import Console

    from mcls.cli import _load_summary
    from mcls.dataset import LoadReport
    from mcls.train import training_table
    report = LoadReport()
    table = training_table(tiny_settings(synth_root), progress=False, report=report)
    centres = int(table.crop.str.endswith('.centre.jpg').sum())
    assert report.crops == len(table) and report.crop_fallbacks == centres
    console = Console(width=200, record=True)
    console.print(_load_summary(report))
    assert f'{centres} ({centres / len(table):.1%})' in console.export_text()


@pytest.mark.parametrize('reproducible', [True, False])
def test_cudnn_autotuner_is_on_unless_reproducible(reproducible):
    from mcls.train import seed_run
    seed_run(1, reproducible)
    assert torch.backends.cudnn.benchmark is (not reproducible)
    assert torch.backends.cudnn.deterministic is reproducible
    a = torch.rand(3)
    seed_run(1, reproducible)
    assert torch.equal(a, torch.rand(3))          # seeded either way

