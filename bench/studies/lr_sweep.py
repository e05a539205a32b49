"""Learning-rate sweep on a validation fold: valid macro F1 of each task for each peak rate (one-cycle).

    python -m bench.studies.lr_sweep --data data/mf300 --lrs seed 1e-3 3e-3

Uses only the training data and its person-aware fold 0; eval answers are never read.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import ROOT, WEIGHTS


from mcls.settings import TASKS, load_settings
from mcls.train import train_task, training_table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', type=Path, required=True)
    ap.add_argument('--lrs', nargs='+', default=['seed', '1e-3', '3e-3'], help="peak rates; 'seed' = settings.ini")
    ap.add_argument('--arch', default='tf_efficientnet_lite0')
    ap.add_argument('--weights', default=str(WEIGHTS))
    ap.add_argument('--size', default='128')
    ap.add_argument('--epochs', default='3')
    ap.add_argument('--work', type=Path, default=ROOT / 'runs' / 'lr_sweep')
    a = ap.parse_args(argv)
    base = {'paths.data': str(a.data), 'paths.cache': str(a.work / 'crops'), 'paths.runs': str(a.work / 'runs'),
            'train.arch': a.arch, 'train.weights': a.weights, 'train.size': a.size, 'train.batch': '32',
            **{f'{t}.epochs': a.epochs for t in TASKS}}
    s = load_settings(overrides=base)
    table = training_table(s, progress=False)
    rows = []
    for task in TASKS:
        for lr in a.lrs:
            lr = str(s.tasks[task].lr) if lr == 'seed' else lr
            r = train_task(table, load_settings(overrides={**base, f'{task}.lr': lr}), task, 0, progress=False)
            rows.append({'task': task, 'lr': float(lr), 'valid_f1': r.valid_f1})
            print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == '__main__':
    main()
