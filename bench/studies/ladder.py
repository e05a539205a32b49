"""The quality ladder: a markdown table of protocol runs (bench/results/quality-*.json), one row per recipe
change, each with its delta over the row it changes. Printed, for docs/quality.md.

    python -m bench.studies.ladder r0-prev:- r1-joint:r0-prev r2-finetune:r1-joint ...

Each argument is NAME:BEFORE (BEFORE '-' for the first row); NAME is the protocol run's --name.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / 'results'


def load(name: str) -> dict:
    files = sorted(RESULTS.glob(f'quality-{name}-2*.json'))
    if not files: raise SystemExit(f'no result for {name} in {RESULTS}')
    return json.loads(files[-1].read_text())


def figures(r: dict) -> dict:
    "Means over the run's seeds of what the ladder shows."
    seeds = [v for v in r['seeds'].values() if 'eval' in v]
    m = lambda f: float(np.mean([f(v) for v in seeds]))   # noqa: E731
    sp = lambda f: float(np.ptp([f(v) for v in seeds])) if len(seeds) > 1 else None   # noqa: E731
    return {'n': len(seeds), 'valid': m(lambda v: v['valid']['f1_18']),
            'valid_tasks': m(lambda v: v['valid']['mean_task']
            if 'mean_task' in v['valid'] else np.mean([v['valid'][t] for t in ('mask', 'gender', 'age')])),
            'eval': m(lambda v: v['eval']['f1_18']), 'eval_spread': sp(lambda v: v['eval']['f1_18']),
            'gender': m(lambda v: v['eval']['gender']), 'age': m(lambda v: v['eval']['age']),
            'tta': m(lambda v: v['eval_tta']['f1_18']), 'degraded': m(lambda v: v['degraded']['f1_18']),
            'train_s': float(np.mean([s for k, s in r['stages'].items() if k.startswith('train_seed')])),
            'valid_tta': (m(lambda v: v['valid']['decisions']['tta']['f1_18']) if 'decisions' in seeds[0]['valid']
                          else None),
            'valid_tuned': m(lambda v: v['valid']['decisions']['crossfit_tuned']['f1_18'])
            if 'decisions' in seeds[0]['valid'] else None,
            'persons': m(lambda v: v['eval_persons']['f1_18']) if 'eval_persons' in seeds[0] else None}


def arguments(command: str, base: str) -> str:
    "The run's recipe arguments: no data, cache, work folder or name; `base` shown as $BASE."
    words, out, skip = command.replace('python -m bench.studies.quality ', '').replace(base, '$BASE').split(), [], False
    for w in words:
        if skip: skip = False; continue
        if w in ('--data', '--cache', '--work', '--name', '--out'): skip = True; continue
        out.append(w)
    return ' '.join(out)


def row(name: str, before: str | None, base: str = '') -> str:
    r, f = load(name), None
    f = figures(r)
    b = figures(load(before)) if before else None
    d = lambda k: f' ({f[k] - b[k]:+.3f})' if b else ''   # noqa: E731
    spread = f", spread {f['eval_spread']:.3f}" if f['eval_spread'] is not None else ''
    seeds = f"{f['n']} seed{'s' if f['n'] > 1 else ''}" + spread
    cmd = arguments(r['command'], base) if base else arguments(r['command'], '\0')
    return (f"| {name} | `{cmd}` | {seeds} | {f['valid']:.3f}{d('valid')} | {f['valid_tasks']:.3f}{d('valid_tasks')} | "
            f"{f['eval']:.3f}{d('eval')} | {f['gender']:.3f} / {f['age']:.3f} | {f['tta']:.3f} | "
            f"{f['degraded']:.3f}{d('degraded')} | {opt(f['valid_tta'])} / {opt(f['valid_tuned'])} | "
            f"{opt(f['persons'])} | "
            f"{f['train_s']:.0f} |")


def opt(v) -> str:
    return '-' if v is None else f'{v:.3f}'


HEADER = ('| row | protocol arguments | seeds | fold-0 F1_18 (delta) | fold-0 mean task F1 (delta) | eval F1_18 '
          '(delta) | '
          'eval gender / age F1 | eval F1_18 with TTA | degraded eval F1_18 (delta) | fold-0 F1_18 with TTA / '
          'tuned (cross-fit) | eval F1_18 per person | train s / seed |\n'
          '|---|---|---|---|---|---|---|---|---|---|---|---|')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('rows', nargs='+', help='NAME:BEFORE pairs, in ladder order')
    ap.add_argument('--base', default='', help='arguments shared by many rows, shown as $BASE')
    a = ap.parse_args(argv)
    print(HEADER)
    for spec in a.rows:
        name, _, before = spec.partition(':')
        print(row(name, None if before in ('', '-') else before, a.base))


if __name__ == '__main__':
    main()
