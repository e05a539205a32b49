"""Helpers shared by tests of several modules: dead pids, folder digests, the CLI in a child process, copies of a
trained model folder, probability folders and submissions, one-line errors."""
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mcls.dataset import load_eval, load_train

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(r, *words):
    "A user error as the CLI must give it: exit 2, one line on stderr and nothing else there, naming `words`."
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith('error:'), r.stderr
    for w in words: assert w in lines[0], lines[0]


def _info(root: Path) -> Path:
    return root / 'data' / 'eval' / 'info.csv'


def _sub(ans):
    return pd.DataFrame({'ImageID': ['a.jpg', 'b.jpg'], 'ans': ans})


def _probs(k):
    return {t: np.full((2, n), k) for t, n in (('mask', 3), ('gender', 2), ('age', 3))}


BAD_SETTINGS = [('crop', 'size', '0', 'must be >= 16'), ('crop', 'margin', '-3', 'must be >= 0'),
                ('crop', 'fallback_crop', '300', 'needs 2'), ('predict', 'batch', '0', 'must be >= 1'),
                ('predict', 'tta_passes', '0', 'must be >= 1'), ('train', 'workers', '-1', 'must be >= 0'),
                ('predict', 'tta_beta', '2', 'must be >= 0 and <= 1'), ('split', 'folds', '1', 'must be >= 2'),
                ('predict', 'tta_scales', '1,3', 'must be >= 0.5 and <= 2'),
                ('mask', 'loss', 'hinge', 'use one of ce, focal'), ('predict', 'persons', 'maybe', 'use one of auto'),
                ('crop', 'device', 'gpu', 'use auto, cpu'), ('joint', 'lr', 'fast', 'could not convert'),
                ('train', 'colour', 'blue', 'unknown setting'), ('colours', 'red', '1', 'unknown section')]


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


TASK_SHAPES = {'mask': 3, 'gender': 2, 'age': 3}


READ_ONLY = Path('/sys')      # a folder no one, root included, can add files to (sysfs)


needs_read_only = pytest.mark.skipif(not READ_ONLY.is_dir(), reason='no /sys here to stand for a read-only folder')


def _valid_folder(folder: Path, n: int = 12, persons: int = 4, seed: int = 0, **bad) -> Path:
    "A run folder's three <task>.valid.npz files for `n` photos of `persons` persons; `bad` replaces arrays: task__key."
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = np.array([f'/d/train/images/p{i % persons}/mask{i}.jpg' for i in range(n)])
    labels = np.random.default_rng(99).integers(0, 18, n)     # the same photos whatever the seed
    for t, k in TASK_SHAPES.items():
        z = {'files': files, 'labels': labels, 'probs': rng.dirichlet(np.ones(k), n)}
        z.update({key.split('__')[1]: v for key, v in bad.items() if key.startswith(f'{t}__')})
        np.savez(folder / f'{t}.valid.npz', **z)
    return folder


def _submission(path: Path, ids, ans):
    pd.DataFrame({'ImageID': ids, 'ans': ans}).to_csv(path, index=False)
    return path


def _persons_case(tmp_path, rows: str):
    ids = [f'{i}.jpg' for i in range(6)]
    for name, ans in (('a.csv', [0] * 6), ('b.csv', [0, 1, 0, 1, 0, 1]), ('answers.csv', [0] * 6)):
        _submission(tmp_path / name, ids, ans)
    (tmp_path / 'meta.csv').write_text('file,split,id\n' + rows)
    return _cli('compare', 'a.csv', 'b.csv', '--answers', 'answers.csv', '--persons-map', 'meta.csv',
                '--set', f'paths.reports={tmp_path / "reports"}', cwd=tmp_path)


def _children(pid: int) -> list[int]:
    "The child pids of `pid` (Linux /proc)."
    out = []
    for task in Path(f'/proc/{pid}/task').glob('*/children'):
        out += [int(c) for c in task.read_text().split()]
    return out


def _gone(pids, within: float) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not any(Path(f'/proc/{p}').exists() and 'Z' not in Path(f'/proc/{p}/stat').read_text().split()[2:3]
                   for p in pids):
            return True
        time.sleep(0.2)
    return False


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


def _copy_models(trained, tmp_path) -> Path:
    d = tmp_path / 'models'
    shutil.copytree(trained['models'], d)
    return d


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


class Crash(Exception): pass


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ['MCLS_TEST_MARKER']),))


class FailingGpuDetector:
    "MTCNN on a GPU that runs out of memory on every batch."
    device = torch.device('cuda')

    def __init__(self): self.calls = 0

    def detect(self, images, landmarks=True):
        self.calls += 1
        raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')

