"""Where the augmentation runs: training images/s of the default learner with 0, 1, 2, ... DataLoader workers
(0 = in the training process), measured in one process, alternating the settings over rounds, best round kept.

    python -m bench.studies.workers --data data/mf600 --cache data/crops600 --workers 0 1 2 --rounds 2

Each measure is `mcls.train.train_task` on all photos of two folds for 2 epochs (no validation, no export); the
figure is the second epoch's training phase (warm), the one `train images/s` shows. Prints a table and the ratio of
each setting to the default (`workers = auto`: none at 2 cores or fewer, else one per usable core up to 16; this
study is what decided that).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')

from mcls.learner import resolve_workers
from mcls.settings import load_settings
from mcls.train import train_task, training_table

from bench.common import ROOT, WEIGHTS
from bench.quality import FIXED   # the protocol's model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', type=Path, required=True)
    ap.add_argument('--cache', type=Path, required=True)
    ap.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--work', type=Path, default=ROOT / 'runs' / 'bench-workers')
    ap.add_argument('--weights', default=str(WEIGHTS), help="local ImageNet weights; '' for a random start")
    ap.add_argument('--set', action='append', default=[], help='section.key=value (e.g. train.arch=test_efficientnet)')
    ap.add_argument('--out', type=Path)
    a = ap.parse_args(argv)
    ov = {**FIXED, 'paths.data': str(a.data), 'paths.cache': str(a.cache), 'paths.runs': str(a.work / 'runs'),
          'train.weights': a.weights, 'train.pretrained': str(bool(a.weights)).lower(), 'joint.full_epochs': '2',
          **dict(kv.split('=', 1) for kv in a.set)}
    s = load_settings(overrides=ov)
    table = training_table(s, progress=False)
    table = table[table.fold.isin([1, 2])].reset_index(drop=True)
    best: dict[int, float] = {}
    for r in range(a.rounds):
        for w in a.workers:
            res = train_task(table, s, 'joint', None, workers=w, progress=False)
            best[w] = max(best.get(w, 0.0), res.train_images_per_s)
            print(f'round {r}: workers {w}: {res.train_images_per_s:.1f} train images/s', flush=True)
    auto = resolve_workers(None)
    base = best.get(auto)
    print(f'{len(table)} photos, {os.cpu_count()} cores, workers = auto means {auto}')
    for w, v in best.items():
        print(f'workers {w}: {v:.1f} images/s' + (f' ({v / base:.2f}x auto)' if base else ''))
    out = {'photos': len(table), 'cores': os.cpu_count(), 'auto': auto, 'best_images_per_s': best,
           'command': ' '.join(['python', '-m', 'bench.studies.workers', *(argv or sys.argv[1:])])}
    if a.out: a.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == '__main__':
    main()
