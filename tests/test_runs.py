"""Run folders listed and compared: `mcls runs` and `mcls runs --diff`."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mcls.runs import list_runs, run_status
from mcls.train import train_task, training_table
from tests.conftest import tiny_settings
from tests.helpers import ROOT, _cli, _dead_pid


def test_runs_diff_names_what_changed_between_two_runs(synth_root):
    from mcls.runs import diff_runs
    s = tiny_settings(synth_root)
    table = training_table(s, progress=False)
    a = train_task(table, s, 'gender', None, progress=False).run_dir
    b = train_task(table, tiny_settings(synth_root, gender__lr='5e-3', train__wd='0.05'), 'gender', None,
                   progress=False).run_dir
    changed = dict((k, (x, y)) for k, x, y in diff_runs(a, b))
    assert changed['gender.lr'][1] == '5e-3' and changed['gender.wd'] == ('0.01', '0.05')
    assert 'mask.lr' not in changed and not any(k.startswith('paths.') for k in changed)
    assert diff_runs(a, a) == []


def test_runs_list_whole_numbers_beside_a_damaged_row(tmp_path):
    import json

    from mcls.runs import list_runs
    (tmp_path / 'a').mkdir()
    (tmp_path / 'a' / 'run.json').write_text(json.dumps({'task': 'joint', 'fold': 0, 'status': 'done', 'epochs': 6,
                                                         'valid_f1': 0.5}))
    (tmp_path / 'b').mkdir()
    (tmp_path / 'b' / 'run.json').write_text('{cut')
    df = list_runs(tmp_path)
    assert df.fold.iloc[0] == 0 and str(df.fold.dtype) == 'Int64' and str(df.epochs.iloc[0]) == '6'
    assert df.status.iloc[1] == 'damaged'


def test_runs_tell_training_done_failed_and_interrupted(tmp_path):
    import socket

    from mcls.atomic import process_start
    here = socket.gethostname()
    cases = {'live': {'status': 'training', 'pid': os.getpid(), 'pid_start': process_start(os.getpid()), 'host': here},
             'killed': {'status': 'training', 'pid': _dead_pid(), 'host': here},
             'reused pid': {'status': 'training', 'pid': os.getpid(), 'pid_start': -5, 'host': here},
             # an older run.json recorded the start in clock ticks since boot (/proc/<pid>/stat, field 22)
             'live, older file': {'status': 'training', 'pid': os.getpid(), 'host': here,
                                  'pid_start': int(Path('/proc/self/stat').read_text().rsplit(')', 1)[1].split()[19])},
             'failed': {'status': 'failed', 'error': 'WriteError: runs/x/last-0.pth: could not be written'},
             'done': {'status': 'done', 'valid_f1': 0.5}}
    for name, meta in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / 'run.json').write_text(json.dumps(meta))
    assert {n: run_status(tmp_path / n) for n in cases} == {'live': 'training', 'live, older file': 'training',
                                                           'killed': 'interrupted',
                                                           'reused pid': 'interrupted', 'failed': 'failed',
                                                           'done': 'done'}
    df = list_runs(tmp_path).set_index('run')
    assert df.status.to_dict() == {n: run_status(tmp_path / n) for n in cases}
    assert df.reason['failed'].startswith('WriteError') and df.reason.isna().sum() == 5


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


def test_a_cut_run_json_is_listed_as_damaged(tmp_path):
    from mcls.runs import list_runs
    for name, text in (('20260101-000000-mask-fold0', '{"task": "mask", "status": "done", "valid_f1": 0.5}'),
                       ('20260101-000001-age-fold0', '{"task": "age", "status": "tra'),
                       ('20260101-000002-gender-fold0', '[1, 2]')):
        (tmp_path / name).mkdir()
        (tmp_path / name / 'run.json').write_text(text)
    df = list_runs(tmp_path).set_index('run')
    assert len(df) == 3 and df.loc['20260101-000000-mask-fold0', 'status'] == 'done'
    for cut in ('20260101-000001-age-fold0', '20260101-000002-gender-fold0'):
        assert df.loc[cut, 'status'] == 'damaged' and 'run.json unreadable' in df.loc[cut, 'reason']

