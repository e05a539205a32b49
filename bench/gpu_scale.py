"""Training speed on one GPU and on all of them: the protocol's default (`mcls train joint`, lite0, fold 0) with
`--processes 1` and `--processes N` (N = the GPUs torch sees, one rank each, NCCL), training images/s of the whole
job and per GPU (warm epochs, from run.json) in one JSON.

    python -m bench.gpu_scale --data data/mf600 --cache data/crops600
    python -m bench.gpu_scale --quick        # tiny synthetic data and model, 1 and 2 gloo ranks on the CPU

Each run's peak rate follows docs/scaling.md's rule for its effective batch (bench.common.scaled_lr). --quick runs
its ranks on the CPU whatever GPUs are there (its 2 ranks would not fit a 1-GPU machine).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import torch

from bench.common import RESULTS, ROOT, WEIGHTS, gpu_profile, scaled_lr
from mcls.atomic import write_text_atomic

__all__ = ['main']


def train(a, processes: int) -> dict:
    "One training with `processes` ranks; its run.json."
    work = a.work / f'p{processes}'
    cmd = [sys.executable, '-m', 'mcls', 'train', 'joint', '--data', str(a.data), '--set', f'paths.cache={a.cache}',
           '--set', f'paths.runs={work}/runs', '--export-dir', str(work / 'models'), '--epochs', str(a.epochs),
           '--processes', str(processes)]
    if a.quick: cmd += ['--config', str(a.work / 'tiny.ini')]
    else: cmd += ['--arch', 'tf_efficientnet_lite0', '--weights', str(a.weights), '--size', str(a.size),
                  '--batch', str(a.batch), '--lr', f'{scaled_lr(a.batch, processes):g}', '--set', 'train.workers=auto']
    env = {**os.environ, **({'CUDA_VISIBLE_DEVICES': ''} if a.quick else {})}
    subprocess.run(cmd, check=True, env=env)
    return json.loads(max((work / 'runs').glob('*/run.json'), key=lambda p: p.stat().st_mtime).read_text())


def quick_setup(work: Path) -> Path:
    "A tiny synthetic build and a settings file for a tiny model (what the tests use)."
    from mcls.demo import tiny_overrides
    from mcls.settings import load_settings
    from mcls.synth import make_dataset
    make_dataset(work / 'data', persons=15, eval_persons=3, seed=1)
    (work / 'tiny.ini').write_text(load_settings(overrides=tiny_overrides(work, 2, **{'train.workers': 0,
                                                                                      'split.folds': 3})).to_ini())
    return work / 'data'


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', type=Path)
    ap.add_argument('--cache', type=Path)
    ap.add_argument('--weights', type=Path, default=WEIGHTS)
    ap.add_argument('--epochs', type=int, default=3, help='the first is not counted (warm-up)')
    ap.add_argument('--size', type=int, default=gpu_profile().size)
    ap.add_argument('--batch', type=int, default=gpu_profile().batch,
                    help='per rank: the effective batch is N times this')
    ap.add_argument('--work', type=Path, default=ROOT / 'runs' / 'gpu_scale')
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--out', type=Path)
    a = ap.parse_args(argv)
    if a.quick: a.data = quick_setup(a.work)
    a.cache = a.cache or a.work / 'crops'
    gpus = 0 if a.quick else torch.cuda.device_count()
    if not gpus and not a.quick: sys.exit('bench.gpu_scale: no CUDA GPU here (use --quick to check the script on CPU)')
    counts = sorted({1, max(gpus, 2 if a.quick else 1)})
    res = {'date': datetime.now().isoformat(timespec='seconds'), 'torch': torch.__version__,
           'device': torch.cuda.get_device_name(0) if gpus else 'cpu', 'gpus': gpus, 'runs': {}}
    for n in counts:
        meta = train(a, n)
        total = meta['train_images_per_s']
        res['runs'][str(n)] = {'processes': n, 'world_size': meta['world_size'], 'train_images_per_s': total,
                               'per_gpu_images_per_s': total / n, 'valid_f1': meta['valid_f1'],
                               'epoch_seconds': meta['epoch_seconds']}
        print(f'{n} process(es): {total:.1f} training images/s, {total / n:.1f} per GPU, valid F1 '
              f'{meta["valid_f1"]:.4f}', flush=True)
    out = a.out or RESULTS / f'gpu-scale-{datetime.now():%Y-%m-%d}.json'
    write_text_atomic(out, json.dumps(res, indent=1))
    return res


if __name__ == '__main__':
    main()
