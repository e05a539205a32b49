"""Fault injection and bad input, with tests that drive several members of each class of defect: inputs validated
where they are read, paths kept inside their folders, outputs whole and unambiguous, runs that end in a state
`mcls runs` tells truly. Full disks and size limits are faked by patching the writer."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mcls.atomic import folder_lock
from mcls.dataset import load_eval, load_train
from mcls.errors import DataError, UserError, WriteError
from mcls.runs import list_runs, run_status
from mcls.settings import SettingsError, load_settings
from tests.conftest import kill_after_first_epoch, tiny_settings
from tests.test_reliability import _cli, _copy_models, _dead_pid, _digest

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(r, *words):
    "A user error as the CLI must give it: exit 2, one line on stderr and nothing else there, naming `words`."
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith('error:'), r.stderr
    for w in words: assert w in lines[0], lines[0]


def _info(root: Path) -> Path:
    return root / 'data' / 'eval' / 'info.csv'


# --- 1, 2: eval/info.csv ---

def test_a_duplicate_imageid_is_refused(synth_root):
    p = _info(synth_root)
    lines = p.read_text().splitlines()
    p.write_text('\n'.join([*lines, lines[1]]) + '\n')
    with pytest.raises(DataError,
                       match=f'row {len(lines) + 1}: ImageID .* listed twice'): load_eval(synth_root / 'data')


def test_an_imageid_climbing_out_of_eval_images_is_refused(synth_root):
    person = sorted((synth_root / 'data' / 'train' / 'images').iterdir())[0]
    photo = next(person.glob('mask1.*'))
    info = pd.read_csv(_info(synth_root), dtype=str)
    info.loc[0, 'ImageID'] = f'../../train/images/{person.name}/{photo.name}'
    info.to_csv(_info(synth_root), index=False)
    assert photo.is_file()       # inside the data folder, but not an eval photo
    with pytest.raises(DataError, match=r'row 2: .*leads outside .*eval.images'): load_eval(synth_root / 'data')


# --- 3, 4, 5: export folders ---

def test_joint_and_task_learners_never_share_a_folder(trained, tmp_path):
    from mcls.train import train_task
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


def test_two_trainings_into_one_folder_cannot_both_succeed(trained, tmp_path):
    from mcls.train import train_task
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


def test_an_export_dir_that_is_a_file_is_refused_before_any_work(synth_root):
    (synth_root / 'precious.txt').write_text('keep me')
    r = _cli('train', 'mask', '--data', synth_root / 'data', '--no-pretrained', '--export-dir',
             synth_root / 'precious.txt', '--set', f'paths.runs={synth_root / "runs"}',
             '--set', f'paths.cache={synth_root / "crops"}', cwd=synth_root)
    one_line_error(r, 'precious.txt', 'a file is in the way')
    assert (synth_root / 'precious.txt').read_text() == 'keep me'
    assert not (synth_root / 'runs').exists() and not (synth_root / 'crops').exists()


# --- 6: pseudo-labels of another eval set ---

def test_pseudo_labels_from_another_eval_set_are_refused(synth_root):
    from mcls.pseudo import add_pseudo
    s = tiny_settings(synth_root)
    probs = {t: np.full((2, n), 1.0 / n) for t, n in (('mask', 3), ('gender', 2), ('age', 3))}
    np.savez(synth_root / 'other.probs.npz', image_ids=np.array(['x1.jpg', 'x2.jpg']), **probs)
    with pytest.raises(DataError, match=r"other eval photos .*first 'x1.jpg'"):
        add_pseudo(pd.DataFrame(), s, synth_root / 'other.probs.npz', 0.9)


# --- 7: resume after the data or corrections changed ---

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


# --- 8: the submission and its probabilities are a pair ---

def _sub(ans):
    return pd.DataFrame({'ImageID': ['a.jpg', 'b.jpg'], 'ans': ans})


def _probs(k):
    return {t: np.full((2, n), k) for t, n in (('mask', 3), ('gender', 2), ('age', 3))}


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


# --- 9, 10: checkpoints and exports on a full disk ---

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


# --- 11: every settings file as strict as --set ---

BAD_SETTINGS = [('crop', 'size', '0', 'must be >= 16'), ('crop', 'margin', '-3', 'must be >= 0'),
                ('crop', 'fallback_crop', '300', 'needs 2'), ('predict', 'batch', '0', 'must be >= 1'),
                ('predict', 'tta_passes', '0', 'must be >= 1'), ('train', 'workers', '-1', 'must be >= 0'),
                ('predict', 'tta_beta', '2', 'must be >= 0 and <= 1'), ('split', 'folds', '1', 'must be >= 2'),
                ('mask', 'loss', 'hinge', 'use one of ce, focal'), ('predict', 'persons', 'maybe', 'use one of auto'),
                ('crop', 'device', 'gpu', 'use auto, cpu'), ('joint', 'lr', 'fast', 'could not convert'),
                ('train', 'colour', 'blue', 'unknown setting'), ('colours', 'red', '1', 'unknown section')]


@pytest.mark.parametrize('section,key,value,match', BAD_SETTINGS)
def test_a_settings_file_is_checked_like_set(tmp_path, section, key, value, match):
    (tmp_path / 'settings.ini').write_text(f'[{section}]\n{key} = {value}\n')
    with pytest.raises(SettingsError, match=match) as e: load_settings(cwd=tmp_path)
    assert 'settings.ini' in str(e.value)
    if match != 'unknown section':
        with pytest.raises(SettingsError, match=match): load_settings(overrides={f'{section}.{key}': value})


def test_undecodable_settings_bytes_are_one_line(tmp_path):
    (tmp_path / 'settings.ini').write_bytes(b'[crop]\nsize = \xff\xfe64\n')
    with pytest.raises(SettingsError, match='not UTF-8'): load_settings(cwd=tmp_path)


@pytest.mark.cli
@pytest.mark.parametrize('setting,words', [('crop.size=0', ['[crop] size']), ('predict.batch=0', ['[predict] batch']),
                                           ('predict.tta_passes=0', ['tta_passes']), ('train.workers=-1', ['workers']),
                                           ('crop.fallback_crop=300', ['fallback_crop'])])
def test_bad_values_are_one_line_on_the_command_line(tmp_path, setting, words):
    one_line_error(_cli('predict', '--set', setting, cwd=tmp_path), *words)


def test_crop_on_cuda_without_a_gpu_is_one_line(synth_root):
    import torch
    if torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    r = _cli('crop', '--data', synth_root / 'data', '--set', 'crop.device=cuda', '--split', 'eval',
             '--set', f'paths.cache={synth_root / "c"}', cwd=synth_root)
    one_line_error(r, '[crop] device = cuda', 'use auto or cpu')


# --- 12: every CSV checked row by row ---

def test_corrections_with_an_extra_field_on_every_row(synth_root):
    fixes = synth_root / 'fixes.csv'
    person = load_train(synth_root / 'data').person.iloc[0]
    fixes.write_text(f'key,field,value\n{person},age,40,oops\n{person},gender,male,oops\n')
    with pytest.raises(DataError, match=r'fixes.csv: line 2 has 4 field\(s\) where the header has 3'):
        load_train(synth_root / 'data', fixes)


def _csv_cases(root: Path):
    "(path, damage) for every CSV mcls reads; the reader of each is called by _read_any."
    data = root / 'data'
    person = load_train(data).person.iloc[0]
    (root / 'fixes.csv').write_text(f'key,field,value\n{person},age,40\n')
    (root / 'answers.csv').write_text(data.joinpath('eval', 'answers.csv').read_text())
    (root / 'map.csv').write_text('file,id\n' + ''.join(f'eval/images/{i},p\n' for i in load_eval(data).image_id))
    return {'train.csv': data / 'train' / 'train.csv', 'info.csv': _info(root), 'corrections': root / 'fixes.csv',
            'answers': root / 'answers.csv', 'persons map': root / 'map.csv'}


def _read_any(name: str, root: Path, path: Path):
    from mcls.evaluate import persons_of, read_labels
    if name == 'train.csv': return load_train(root / 'data')
    if name == 'info.csv': return load_eval(root / 'data')
    if name == 'corrections': return load_train(root / 'data', path)
    if name == 'answers': return read_labels(path)
    return persons_of(['x'], path)


@pytest.mark.parametrize('name', ['train.csv', 'info.csv', 'corrections', 'answers', 'persons map'])
@pytest.mark.parametrize('damage,words', [('extra field', 'field'), ('bytes', 'not UTF-8'), ('no header',
                                                                                             'missing column')])
def test_every_csv_is_validated_where_it_is_read(synth_root, name, damage, words):
    path = _csv_cases(synth_root)[name]
    lines = path.read_text().splitlines()
    if damage == 'extra field': path.write_text('\n'.join([lines[0], *(l + ',x' for l in lines[1:])]) + '\n')
    elif damage == 'bytes': path.write_bytes(path.read_bytes() + b'\xff\xfe\n')
    else: path.write_text('\n'.join(lines[1:]) + '\n')
    with pytest.raises(DataError, match=f'{path.name}.*{words}'): _read_any(name, synth_root, path)


# --- 13: what killed writers leave ---

def test_a_stray_temporary_of_a_killed_accept_is_cleaned(tmp_path):
    from mcls.suspects import accept_suspects
    stray = tmp_path / f'.fixes.csv.{_dead_pid()}.tmp'
    stray.write_text('half')
    sus = pd.DataFrame({'key': ['p1'], 'field': ['gender'], 'given': ['male'], 'suggested': ['female'],
                        'value': ['female']})
    assert accept_suspects(sus, tmp_path / 'fixes.csv') == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ['fixes.csv']


# --- classes: paths inside their folders ---

def test_linked_images_folder_is_fine_and_a_photo_linking_out_is_not(synth_root, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp('store')
    images = synth_root / 'data' / 'eval' / 'images'
    shutil.move(images, elsewhere / 'images')
    images.symlink_to(elsewhere / 'images')
    assert len(load_eval(synth_root / 'data'))               # the linked folder: fine
    first = sorted((elsewhere / 'images').iterdir())[0]
    shutil.move(first, elsewhere / first.name)
    first.symlink_to(elsewhere / first.name)                 # a photo linking out of it: not
    with pytest.raises(DataError, match=f'{first.name}.*leads outside'): load_eval(synth_root / 'data')
    train = synth_root / 'data' / 'train' / 'images'
    person = sorted(train.iterdir())[0]
    shutil.move(person, elsewhere / person.name)
    person.symlink_to(elsewhere / person.name)               # a person folder linking out of train/images
    with pytest.raises(DataError, match='leads outside'): load_train(synth_root / 'data')


# --- classes: outputs whole, and refused before any work when a path is the wrong kind ---

@pytest.mark.parametrize('command,make', [
    (['predict', '--out', '{root}/out'], 'dir'),
    (['train', 'mask', '--export-dir', '{root}/out'], 'file'),
    (['train', 'mask', '--set', 'paths.runs={root}/out'], 'file'),
    (['crop', '--set', 'paths.cache={root}/out'], 'file'),
    (['predict', '--out', '{root}/out/sub.csv'], 'file'),
])
def test_outputs_of_the_wrong_kind_are_refused_before_any_work(synth_root, command, make):
    out = synth_root / 'out'
    out.mkdir() if make == 'dir' else out.write_text('x')
    args = [a.format(root=synth_root) for a in command]
    r = _cli(*args, '--data', synth_root / 'data', *(['--no-pretrained'] if 'train' in args else []),
             '--set', f'paths.cache={synth_root / "crops"}' if 'paths.cache' not in ' '.join(args) else 'crop.size=64',
             '--set', f'paths.models={synth_root / "models"}', cwd=synth_root)
    one_line_error(r, str(out))
    assert not (synth_root / 'crops').exists() and not (synth_root / 'runs').exists()


# --- classes: every run ends in a state `mcls runs` tells truly ---

def test_runs_tell_training_done_failed_and_interrupted(tmp_path):
    import socket
    from mcls.atomic import process_start
    here = socket.gethostname()
    cases = {'live': {'status': 'training', 'pid': os.getpid(), 'pid_start': process_start(os.getpid()), 'host': here},
             'killed': {'status': 'training', 'pid': _dead_pid(), 'host': here},
             'reused pid': {'status': 'training', 'pid': os.getpid(), 'pid_start': -5, 'host': here},
             'failed': {'status': 'failed', 'error': 'WriteError: runs/x/last-0.pth: could not be written'},
             'done': {'status': 'done', 'valid_f1': 0.5}}
    for name, meta in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / 'run.json').write_text(json.dumps(meta))
    assert {n: run_status(tmp_path / n) for n in cases} == {'live': 'training', 'killed': 'interrupted',
                                                           'reused pid': 'interrupted', 'failed': 'failed',
                                                           'done': 'done'}
    df = list_runs(tmp_path).set_index('run')
    assert df.status.to_dict() == {n: run_status(tmp_path / n) for n in cases}
    assert df.reason['failed'].startswith('WriteError') and df.reason.isna().sum() == 4


def test_training_killed_with_sigkill_shows_interrupted(synth_root):
    "the real thing: kill -9 mid-training leaves status training in run.json, and `mcls runs` says interrupted"
    (synth_root / 'settings.ini').write_text('[train]\narch = test_efficientnet\npretrained = false\nsize = 64\n'
                                              'epochs = 50\nworkers = 0\nbatch = 16\n[joint]\nepochs = 50\n'
                                              '[crop]\nsize = 64\n')
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'NO_ALBUMENTATIONS_UPDATE': '1', 'OMP_NUM_THREADS': '1'}
    p = subprocess.Popen([sys.executable, str(ROOT / 'cli.py'), 'train', 'joint', '--data', 'data'], cwd=synth_root,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((synth_root / 'runs').glob('*/last_epoch.json')): time.sleep(0.2)
        assert list((synth_root / 'runs').glob('*/last_epoch.json')), 'no epoch finished in 120 s'
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    run = next((synth_root / 'runs').iterdir())
    assert json.loads((run / 'run.json').read_text())['status'] == 'training'
    assert run_status(run) == 'interrupted'
    r = _cli('runs', cwd=synth_root)
    assert 'interrupted' in r.stdout, r.stdout


def test_cli_errors_are_one_line_with_nothing_else_on_stderr(synth_root):
    "a spread of bad inputs through the real entry point: third-party warnings must not reach stderr either"
    info, answers = _info(synth_root), synth_root / 'data' / 'eval' / 'answers.csv'
    for p in (info, answers): p.write_text(p.read_text() + p.read_text().splitlines()[1] + '\n')
    one_line_error(_cli('crop', '--split', 'eval', '--data', synth_root / 'data', cwd=synth_root), 'listed twice')
    one_line_error(_cli('evaluate', answers, answers, cwd=synth_root), 'appears twice')
    one_line_error(_cli('train', 'mask', '--data', synth_root / 'data', '--no-pretrained', '--set', 'mask.lr=-1',
                        cwd=synth_root), '[mask] lr')
