"""One quality-protocol iteration (train the recipe on fold 0 with one seed, predict eval, score), timed side by side:
the code of a base commit (from a git worktree) against this checkout, with and without the joint learner.

    python -m bench.studies.iteration --base 5769d23 --data data/mf600 --cache data/crops600
    python -m bench.studies.iteration --quick          # tiny synthetic data and model (checks the script runs)

Each iteration runs in its own process on the same data, crop cache and fixed protocol settings (lite0, offline
weights, fold 0). The base commit trains the recipe of configs/prev.ini (three learners, the recipe of 2026-11-26);
this checkout trains it too ("tasks"), then its default recipe from settings.ini ("default").
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.common import RESULTS, ROOT, WEIGHTS


# run inside the code under test (its own mcls first, by PYTHONPATH): the same calls exist at the base commit
DRIVER = r'''
import json, sys, time
from mcls.settings import load_settings
from mcls.train import train_task, training_table
from mcls.predict import predict_eval
from mcls.evaluate import evaluate_files
ov = json.loads(sys.argv[2])
config = sys.argv[3] or None
s = load_settings(config, ov)
t0 = time.perf_counter()
table = training_table(s, progress=False)
learners = ['joint'] if getattr(s.tasks['mask'], 'mode', 'tasks') == 'joint' else ['mask', 'age', 'gender']
t1 = time.perf_counter()
for t in learners: train_task(table, s, t, 0, export_dir=s.paths.models, progress=False)
t2 = time.perf_counter()
predict_eval(s, [s.paths.models], s.predict.out, tta=False, progress=False)
t3 = time.perf_counter()
sc = evaluate_files(s.predict.out, s.paths.data / 'eval' / 'answers.csv')
print('RESULT ' + json.dumps({'load_s': t1 - t0, 'train_s': t2 - t1, 'predict_s': t3 - t2, 'total_s': t3 - t0,
                              'f1_18': sc.f1, 'learners': learners}))
'''


def iteration(code: Path, overrides: dict, config: Path | None, work: Path) -> dict:
    "One iteration of the code at `code` in a fresh process; its timings and eval F1."
    ov = {**overrides, 'paths.runs': str(work / 'runs'), 'paths.models': str(work / 'models'),
          'predict.out': str(work / 'sub.csv')}
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'NO_ALBUMENTATIONS_UPDATE': '1', 'PYTHONPATH': str(code)}   # its mcls
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, '-c', DRIVER, str(code), json.dumps(ov), str(config or '')], cwd=work,
                       capture_output=True, text=True, env=env)
    if p.returncode: raise RuntimeError(f'iteration in {code} failed:\n{p.stderr[-3000:]}')
    res = json.loads(next(l for l in p.stdout.splitlines() if l.startswith('RESULT '))[7:])
    return {**res, 'process_s': time.perf_counter() - t0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--base', default='5769d23', help='the base commit (default: the code of 2026-11-26)')
    ap.add_argument('--data', type=Path, default=ROOT / 'data' / 'mf600')
    ap.add_argument('--cache', type=Path, help='crop cache shared by every iteration (default: a temporary one)')
    ap.add_argument('--quick', action='store_true', help='tiny synthetic data and model')
    ap.add_argument('--out', type=Path)
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix='mcls-iter-'))
    base = tmp / 'base'
    subprocess.run(['git', 'worktree', 'add', '--detach', str(base), a.base], cwd=ROOT, check=True, capture_output=True)
    try:
        if a.quick:
            from mcls.demo import TINY
            from mcls.synth import make_dataset
            make_dataset(tmp / 'data', persons=12, eval_persons=3, seed=1)
            fixed = {**TINY, 'paths.data': str(tmp / 'data'), 'split.folds': '3',
                     **{f'{t}.epochs': '1' for t in ('mask', 'age', 'gender')}}
            new_extra = {'joint.epochs': '2'}
        else:
            fixed = {'paths.data': str(a.data.resolve()), 'train.arch': 'tf_efficientnet_lite0',
                     'train.weights': str(WEIGHTS), 'train.pretrained': 'true'}
            new_extra = {}
        fixed['paths.cache'] = str((a.cache or tmp / 'crops').resolve())
        prev = ROOT / 'configs' / 'prev.ini'
        runs = {}
        for name, code, config, ov in (
                ('base_tasks', base, prev, fixed),
                ('new_tasks', ROOT, prev, {**fixed, 'train.precision': 'auto', 'train.channels_last': 'true'}),
                ('new_default', ROOT, None, {**fixed, **new_extra})):
            (tmp / name).mkdir()
            runs[name] = iteration(code, ov, config, tmp / name)
            print(name, json.dumps(runs[name]), flush=True)
    finally:
        subprocess.run(['git', 'worktree', 'remove', '--force', str(base)], cwd=ROOT, capture_output=True)
    b = runs['base_tasks']['total_s']
    report = {'date': datetime.now().isoformat(timespec='seconds'), 'base': a.base, 'data': str(a.data),
              'quick': a.quick, 'command': ' '.join(['python', '-m', 'bench.studies.iteration',
                                                     *(argv or sys.argv[1:])]),
              'runs': runs, 'speedup_tasks': b / runs['new_tasks']['total_s'],
              'speedup_default': b / runs['new_default']['total_s']}
    out = a.out or RESULTS / f"iteration{'-quick' if a.quick else ''}-{datetime.now():%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    for name, r in runs.items():
        print(f"{name:12s} total {r['total_s']:7.1f} s (train {r['train_s']:6.1f}, predict {r['predict_s']:5.1f})  "
              f"F1_18 {r['f1_18']:.4f}  {'+'.join(r['learners'])}")
    print(f"speed-up over {a.base}: tasks {report['speedup_tasks']:.2f}x, default {report['speedup_default']:.2f}x; "
          f"wrote {out}")
    return report


if __name__ == '__main__':
    main()
