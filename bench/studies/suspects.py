"""How well `mcls suspects` finds label errors: inject known errors into a copy of a build, rank, count hits.

    python -m bench.studies.suspects --data data/mf600 --cache data/crops600

Injected into the copy (persons drawn with --seed, each person in one kind only): 10 persons' gender flipped;
10 persons' age moved into another group (to its mid-range year: 24, 45 or 66; adjacent moves and moves to and
from 60+ included); mask1 and incorrect_mask swapped for 10 persons (20 photos). Per task, recall@2k and
precision@2k with k the injected count, in bench/results/suspects-<date>.json, with the top suspects that were not
injected (candidates for errors in the source labels themselves).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

from bench.common import RESULTS, ROOT, WEIGHTS

os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')

import numpy as np
import pandas as pd

from mcls.labels import age_group
from mcls.pseudo import GROUP_YEARS
from mcls.settings import load_settings
from mcls.suspects import oof_models, oof_probs, suspect_table
from mcls.train import training_table

# (from group, to group) for the 10 age moves: adjacent both ways, and to and from 60+
AGE_MOVES = [(0, 1), (1, 0), (1, 2), (2, 1), (0, 2), (2, 0), (0, 1), (1, 2), (1, 0), (2, 1)]


def inject(src: Path, dest: Path, seed: int = 0, n: int = 10) -> dict[str, set[str]]:
    """Copy a build's training set (photos hard-linked) with errors injected; returns the injected keys per task
    in the corrections-file format (person id; folder/stem for a photo's mask)."""
    if dest.exists(): shutil.rmtree(dest)
    (dest / 'train').mkdir(parents=True)
    meta = pd.read_csv(src / 'train' / 'train.csv', dtype=str)
    shutil.copytree(src / 'train' / 'images', dest / 'train' / 'images', copy_function=os.link)
    rng = np.random.default_rng(seed)
    groups = age_group(meta.age.astype(int).to_numpy())
    order = list(rng.permutation(len(meta)))
    gender_rows = [order.pop() for _ in range(n)]
    age_rows = []
    for a, b in AGE_MOVES[:n]:
        i = next(i for i in order if groups[i] == a)
        order.remove(i)
        age_rows.append((i, b))
    mask_rows = [order.pop() for _ in range(n)]
    meta.loc[gender_rows, 'gender'] = meta.loc[gender_rows, 'gender'].map({'male': 'female', 'female': 'male'})
    for i, b in age_rows: meta.loc[i, 'age'] = str(GROUP_YEARS[b])
    injected = {'gender': set(meta.id[gender_rows]), 'age': set(meta.id[[i for i, _ in age_rows]]), 'mask': set()}
    for i in mask_rows:
        d = dest / 'train' / 'images' / meta.path[i]
        a, b = (next(p for p in d.iterdir() if p.stem == s and not p.name.startswith('.')) for s in ('mask1',
                                                                                                     'incorrect_mask'))
        tmp = d / ('swap' + a.suffix)
        a.rename(tmp); b.rename(d / ('mask1' + b.suffix)); tmp.rename(d / ('incorrect_mask' + a.suffix))
        injected['mask'] |= {f'{meta.path[i]}/mask1', f'{meta.path[i]}/incorrect_mask'}
    meta.to_csv(dest / 'train' / 'train.csv', index=False)
    (dest / 'eval').mkdir()   # the layout wants one; suspects never reads it
    pd.DataFrame({'ImageID': [], 'ans': []}).to_csv(dest / 'eval' / 'info.csv', index=False)
    return injected


def hits(suspects: pd.DataFrame, injected: set[str]) -> dict:
    k = len(injected)
    top = set(suspects.key.head(2 * k))
    found = len(top & injected)
    return {'k': k, 'found_in_top_2k': found, 'recall_at_2k': found / k, 'precision_at_2k': found / (2 * k),
            'ranks': sorted(int(i) + 1 for i in np.flatnonzero(suspects.key.isin(injected)))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', type=Path, default=ROOT / 'data' / 'mf600')
    ap.add_argument('--cache', type=Path, help='crop cache (photos are hard links: the same bytes, the same crops)')
    ap.add_argument('--work', type=Path, default=ROOT / 'runs' / 'suspects')
    ap.add_argument('--folds', type=int, default=3)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--set', action='append', help='section.key=value override of the recipe (repeatable)')
    ap.add_argument('--out', type=Path)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = a.work / 'data'
    injected = inject(a.data, data, a.seed)
    ov = {'paths.data': str(data), 'paths.cache': str(a.cache or a.work / 'crops'), 'paths.runs': str(a.work / 'runs'),
          'paths.models': str(a.work / 'models'), 'paths.reports': str(a.work / 'reports'),
          'train.arch': 'tf_efficientnet_lite0', 'train.weights': str(WEIGHTS), 'train.pretrained': 'true',
          **dict(kv.split('=', 1) for kv in a.set or [])}
    s = load_settings(overrides=ov)
    dirs = oof_models(s, a.folds, progress=False)
    table = training_table(s, progress=False)
    report = {'date': datetime.now().isoformat(timespec='seconds'), 'data': str(a.data), 'folds': a.folds,
              'command': ' '.join(['python', '-m', 'bench.studies.suspects', *(argv or sys.argv[1:])]), 'tasks': {}}
    for t in ('gender', 'age', 'mask'):
        sus = suspect_table(table, oof_probs(dirs, t), t)
        sus.to_csv(a.work / f'suspects_{t}.csv', index=False)
        report['tasks'][t] = {**hits(sus, injected[t]),
                              'top_not_injected': sus[~sus.key.isin(injected[t])].head(8)[
                                  ['key', 'given', 'suggested', 'score']].to_dict('records')}
    report['summary'] = {'recall_at_2k': {t: report['tasks'][t]['recall_at_2k'] for t in report['tasks']},
                         'precision_at_2k': {t: report['tasks'][t]['precision_at_2k'] for t in report['tasks']}}
    report['wall_s'] = round(time.perf_counter() - t0, 1)
    out = a.out or RESULTS / f'suspects-{datetime.now():%Y-%m-%d}.json'
    out.write_text(json.dumps(report, indent=1, default=str))
    for t, r in report['tasks'].items():
        print(f"{t:7s} recall@2k {r['recall_at_2k']:.2f}  precision@2k {r['precision_at_2k']:.2f}  "
              f"(k={r['k']}, injected ranks {r['ranks'][:12]})")
    print(f"wrote {out} ({report['wall_s']:.0f} s)")
    return report


if __name__ == '__main__':
    main()
