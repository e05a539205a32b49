"""Several ranks as one job (`--processes N`): 2 gloo ranks on the CPU, tiny synthetic data, the real command line."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mcls import distributed
from mcls.demo import tiny_overrides
from mcls.errors import UserError
from mcls.runs import run_status
from mcls.settings import LEARNERS, load_settings
from mcls.synth import make_dataset
from mcls.train import training_table
from tests.helpers import _children, _cli, _gone, one_line_error

ROOT = Path(__file__).parents[1]
# the ranks run on the CPU (gloo) on any machine: 2 ranks would not fit a 1-GPU machine, which refuses them
CPU_RANKS = {**os.environ, 'CUDA_VISIBLE_DEVICES': ''}


def mcls(*args, cwd, **env):
    return subprocess.run([sys.executable, '-m', 'mcls', *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**CPU_RANKS, 'COLUMNS': '200', **env})


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A synthetic set and a settings file for a tiny model, two epochs, three folds."
    root = tmp_path_factory.mktemp('ranks')
    make_dataset(root / 'data', persons=15, eval_persons=3, seed=1)
    ov = tiny_overrides(root, 2, **{'train.workers': 0, 'split.folds': 3,
                                    **{f'{t}.fit': 'one_cycle' for t in LEARNERS}})
    (root / 'tiny.ini').write_text(load_settings(overrides=ov).to_ini())     # the settings a run folder keeps
    return root


def runs_of(root: Path, runs: str) -> list[Path]:
    return sorted(p.parent for p in (root / runs).glob('*/run.json'))


def history(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / 'history.csv').drop(columns='time')


@pytest.mark.cli
def test_two_ranks_train_once_export_once_and_repeat_exactly(tiny):
    for k in (1, 2):     # the same launch twice, one seed
        r = mcls('train', 'joint', '--config', 'tiny.ini', '--processes', 2, '--set', f'paths.runs=runs{k}',
                 '--export-dir', f'models{k}', cwd=tiny)
        assert r.returncode == 0, r.stderr[-2000:]
    (a,), (b,) = runs_of(tiny, 'runs1'), runs_of(tiny, 'runs2')
    meta = json.loads((a / 'run.json').read_text())
    assert meta['world_size'] == 2 and meta['status'] == 'done'
    s = load_settings(tiny / 'tiny.ini')
    fold = int((training_table(s, progress=False).fold == 0).sum())
    assert meta['valid_photos'] == [fold, fold]          # every validation photo once, each epoch, across ranks
    assert len(np.load(a / 'mask.valid.npz')['files']) == fold
    assert len(history(a)) == 2
    pd.testing.assert_frame_equal(history(a), history(b))
    assert sorted(p.name for p in (tiny / 'models1').iterdir() if not p.name.startswith('.')) == \
        sorted(p.name for p in (tiny / 'models2').iterdir() if not p.name.startswith('.'))
    # the export loads in a fresh process, and the one-process and two-rank predictions are the same submission
    one = mcls('predict', '--config', 'tiny.ini', '--models', 'models1', '--out', 'one.csv', cwd=tiny)
    two = mcls('predict', '--config', 'tiny.ini', '--models', 'models1', '--out', 'two.csv', '--processes', 2, cwd=tiny)
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-2000:], two.stderr[-2000:])
    assert (tiny / 'one.csv').read_bytes() == (tiny / 'two.csv').read_bytes()
    p1, p2 = np.load(tiny / 'one.csv.probs.npz'), np.load(tiny / 'two.csv.probs.npz')
    for t in ('mask', 'gender', 'age'): np.testing.assert_allclose(p1[t], p2[t], atol=1e-5)
    assert len(pd.read_csv(tiny / 'two.csv')) == len(pd.read_csv(tiny / 'data' / 'eval' / 'info.csv'))


# injected into every process of a launch (Python imports sitecustomize at start-up): rank 1 fails when epoch 1
# starts, inside the training, as a real error would
FAIL_RANK_1 = '''
import os
if os.environ.get('RANK') == '1':
    import mcls.distributed as D
    real = D.DDPTrainer.before_epoch
    def before_epoch(self):
        if self.epoch >= 1: raise RuntimeError(f'rank 1 fails on purpose at epoch {self.epoch}')
        real(self)
    D.DDPTrainer.before_epoch = before_epoch
'''


@pytest.mark.cli
def test_a_failing_rank_stops_the_launch_and_marks_the_run_failed_and_resume_finishes_it(tiny, tmp_path):
    (tmp_path / 'sitecustomize.py').write_text(FAIL_RANK_1)
    r = mcls('train', 'joint', '--config', 'tiny.ini', '--processes', 2, '--set', 'paths.runs=runs-fail',
             '--export-dir', 'models-fail', cwd=tiny, PYTHONPATH=str(tmp_path))
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and 'rank 1 of 2 failed' in lines[0] and 'on purpose' in lines[0], r.stderr[-2000:]
    (run,) = runs_of(tiny, 'runs-fail')
    meta = json.loads((run / 'run.json').read_text())
    assert meta['status'] == 'failed' and 'rank 1' in meta['error']
    assert json.loads((run / 'last_epoch.json').read_text())['epoch'] == 0    # the epoch before the failure is kept
    r = mcls('train', 'joint', '--config', 'tiny.ini', '--processes', 2, '--set', 'paths.runs=runs-fail',
             '--export-dir', 'models-fail', '--resume', cwd=tiny)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run / 'run.json').read_text())['status'] == 'done'
    assert list(history(run).epoch) == [0, 1]


def test_rank_args_drop_processes_only():
    assert distributed.rank_args(['train', 'joint', '--processes', '2', '--fold', '1']) == ['train', 'joint', '--fold',
                                                                                            '1']
    assert distributed.rank_args(['predict', '--processes=3', '--tta']) == ['predict', '--tta']


@pytest.mark.parametrize('n,world', [(21, 2), (5, 3), (2, 4), (0, 2)])
def test_shards_cover_every_row_once_in_order(monkeypatch, n, world):
    rows = []
    for r in range(world):
        monkeypatch.setenv('WORLD_SIZE', str(world)); monkeypatch.setenv('RANK', str(r))
        rows += list(range(n))[distributed.shard(n)]
    assert rows == list(range(n))


@pytest.mark.cli
def test_processes_inside_a_launched_rank_is_refused(tiny):
    r = mcls('train', 'joint', '--config', 'tiny.ini', '--processes', 2, cwd=tiny, WORLD_SIZE='2', RANK='0')
    assert r.returncode == 2 and 'inside a distributed launch' in r.stderr


@pytest.mark.cli
@pytest.mark.parametrize('args', [['mask', '--fold', '1'], ['gender', '--full', '--set', 'gender.photos_per_person=3'],
                                  ['age', '--set', 'age.fit=fine_tune']])
def test_a_task_learner_on_another_fold_on_every_photo_or_fine_tuned(tiny, args):
    """fine_tune freezes the body, then unfreezes it: DDP is rebuilt each time, and the ranks must end in step;
    person-balanced epochs (3 photos a person) are shared between the ranks."""
    runs = f'runs-{args[0]}'
    r = mcls('train', *args, '--config', 'tiny.ini', '--processes', 2, '--set', f'paths.runs={runs}',
             '--export-dir', f'models-{args[0]}', cwd=tiny)
    assert r.returncode == 0, r.stderr[-2000:]
    (run,) = runs_of(tiny, runs)
    meta = json.loads((run / 'run.json').read_text())
    assert (meta['world_size'], meta['status'], meta['fold']) == (2, 'done', {'--full': None, '--fold': 1}.get(args[1],
                                                                                                               0))
    assert (tiny / f'models-{args[0]}' / f'{args[0]}.safetensors').exists()


@pytest.mark.cli
def test_torchruns_ranks_train_as_well(tiny):
    "The ranks read the environment torchrun sets (RANK, WORLD_SIZE, ...): no --processes, same training."
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2', '-m',
                        'mcls', 'train', 'joint', '--config', 'tiny.ini', '--set', 'paths.runs=runs-torchrun',
                        '--export-dir', 'models-torchrun'], cwd=tiny, capture_output=True, text=True, timeout=600,
                       env=CPU_RANKS)
    assert r.returncode == 0, r.stderr[-2000:]
    (run,) = runs_of(tiny, 'runs-torchrun')
    assert json.loads((run / 'run.json').read_text())['world_size'] == 2
    assert (tiny / 'models-torchrun' / 'joint.safetensors').exists()
    assert r.stdout.count('epoch 0 ') == 1 and 'Better model' not in r.stdout     # rank 0 alone prints its epoch line


@pytest.mark.cli
def test_two_machines_train_one_job(tiny):
    "Two 'machines' on this one: two torchrun launchers meeting at a c10d rendezvous on localhost, one gloo rank each."
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    node = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '2', '--nproc-per-node', '1',
            '--rdzv-backend', 'c10d', '--rdzv-endpoint', f'127.0.0.1:{port}', '--rdzv-id', 'mcls-two-machines',
            '-m', 'mcls', 'train', 'joint', '--config', 'tiny.ini', '--set', 'paths.runs=runs-nodes',
            '--export-dir', 'models-nodes']
    procs = [subprocess.Popen(node, cwd=tiny, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CPU_RANKS)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    (run,) = runs_of(tiny, 'runs-nodes')
    meta = json.loads((run / 'run.json').read_text())
    assert (meta['world_size'], meta['status']) == (2, 'done')
    assert (tiny / 'models-nodes' / 'joint.safetensors').exists()


@pytest.mark.cli
@pytest.mark.skipif(not Path('/proc/self/task').is_dir(), reason='finds the ranks through /proc')
@pytest.mark.parametrize('how', [signal.SIGTERM, signal.SIGKILL])
def test_ranks_die_with_their_launcher_and_export_nothing(tiny_ranks, how):
    "7 too: a global option (-v) before the command, the documented form, starts the ranks"
    runs, models = f'runs-{how.name}', tiny_ranks / f'models-{how.name}'
    p = subprocess.Popen([sys.executable, '-m', 'mcls', '-v', 'train', 'joint', '--config', 'tiny.ini', '--processes',
                          '2',
                          '--set', f'paths.runs={runs}', '--export-dir', str(models)], cwd=tiny_ranks,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, 'CUDA_VISIBLE_DEVICES': ''})      # gloo ranks on any machine
    try:
        end = time.monotonic() + 240
        while not list((tiny_ranks / runs).glob('*/history.csv')) and time.monotonic() < end:   # an epoch done
            assert p.poll() is None, p.stderr.read()
            time.sleep(0.2)
        ranks = _children(p.pid)
        assert len(ranks) == 2
        p.send_signal(how)
        p.wait(timeout=60)
        assert _gone(ranks, 30), 'a rank outlived its launcher'
    finally:
        if p.poll() is None: p.kill()
    if how == signal.SIGTERM: assert p.returncode == 128 + how and 'interrupted (SIGTERM)' in p.stderr.read()
    time.sleep(1)
    assert not models.exists()
    (run,) = [r.parent for r in (tiny_ranks / runs).glob('*/run.json')]
    assert run_status(run) == 'interrupted'


def test_a_global_option_before_the_command_is_the_command_line(monkeypatch):
    from mcls import cli
    monkeypatch.setattr(sys, 'argv', ['mcls', '-v', 'train', 'joint', '--processes', '2'])
    cli._join_ranks('train', 2)          # accepted: the ranks run this command line
    monkeypatch.setattr(sys, 'argv', ['pytest', 'tests'])
    with pytest.raises(UserError, match='needs the command line'): cli._join_ranks('train', 2)


@pytest.mark.cli
def test_resume_with_processes_and_no_run_is_refused_before_the_ranks(tmp_path):
    r = _cli('train', 'mask', '--resume', '--processes', '2', '--set', f'paths.runs={tmp_path / "runs"}', cwd=tmp_path)
    one_line_error(r, 'no run of mask', 'nothing to resume')
    assert 'rank' not in r.stderr            # the launcher's own refusal, not a rank's error relayed


@pytest.mark.parametrize('gpus, ranks, refused', [(1, 2, True), (4, 8, True), (4, 4, False), (2, 1, False)])
def test_more_ranks_than_gpus_is_refused_naming_both_numbers(monkeypatch, gpus, ranks, refused):
    from mcls import distributed
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: gpus)
    if refused:
        with pytest.raises(UserError, match=f'{ranks} ranks on this machine but torch sees {gpus} GPU.*at most {gpus}'):
            distributed.check_gpus(ranks)
    else:
        distributed.check_gpus(ranks)


def test_any_number_of_ranks_on_a_cpu(monkeypatch):
    from mcls import distributed
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    distributed.check_gpus(64)


def test_processes_beyond_the_gpus_are_refused_before_any_work(monkeypatch, tmp_path):
    import sys

    from mcls import cli
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(sys, 'argv', ['mcls', 'train', 'joint', '--processes', '2'])
    with pytest.raises(UserError, match='2 ranks on this machine but torch sees 1 GPU'): cli._join_ranks('train', 2)

