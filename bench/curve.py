"""The learning curve: the submission recipe (a learner on every training person of a subset, for the fixed epoch
count) and the frozen-feature floor at 180, 360, 900 and 2,700 training persons of the whole maskfaces build,
subsets stratified by gender and age group (and nested), all scored on the same eval photos. One point (persons,
seed) per invocation, so none runs for hours and each survives being stopped (--keep reuses what is done).

    python -m bench.curve point --persons 180 --seed 777 --data data/maskfaces --cache data/crops-full
    python -m bench.curve collect --name full   # bench/results/quality-full-full-<date>.json, docs/learning_curve.png

A screen of recipe changes: each row a --work folder of points made with --set (and --no-floor), or with
--models (another folder's learners) and --tta or --offsets (decision offsets fitted on a fold-0 learner's
validation photos): prediction rows. Rows are judged against a baseline folder by `mcls compare` over the eval
persons, both seeds pooled:

    python -m bench.curve point --persons 900 --seed 777 --no-floor --set train.age_head=ordinal \
        --work runs/screen/ordinal ...
    python -m bench.curve screen --baseline runs/screen/default --persons 900 --name screen900 runs/screen/ordinal ...

`collect` writes `summary.learning_curve`: `persons` (ints) and, per size, per-seed lists of the submission
recipe's eval F1_18 (`default_f1_18`), of the floor's (`probe_f1_18`, the floor's view chosen on fold 0) and of each
task's macro F1. At the largest size the default is the submission recipe on every training person.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import IDENTITY, RESULTS, ROOT, WEIGHTS, load_crop_fold
from bench.quality import FIXED, build_data, predict_scores, probe, train_into, tune_on_fold0
from mcls.demo import tiny_overrides
from mcls.evaluate import read_labels
from mcls.labels import LABEL_TASKS
from mcls.settings import load_settings
from mcls.tune import TUNING_FILE

__all__ = ['SIZES', 'stratified_persons', 'by_mask_state', 'point', 'collect', 'screen', 'framing']

SIZES = (180, 360, 900, 2700)
WORK = ROOT / 'runs' / 'curve'
# what a collection keeps of each screen decision
DECISION_KEYS = ('row', 'persons', 'seeds', 'set', 'tta', 'diff', 'low', 'high', 'becomes_default', 'train_seconds',
                 'baseline_train_seconds')


def stratified_persons(table: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """`n` person ids with the gender x age-group mix of all of them (largest remainders), each stratum's persons
    in one seeded order, so a smaller subset is the start of a larger one."""
    persons = table.drop_duplicates('person').sort_values('person')
    if n >= len(persons): return persons.person.to_numpy()
    strata = list(persons.groupby(['gender', 'age_group']).person)
    exact = np.array([len(p) for _, p in strata]) * n / len(persons)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind='stable')[:n - quota.sum()]] += 1
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(p.to_numpy())[:q] for (_, p), q in zip(strata, quota)])


def _settings(a, work: Path, data: Path):
    ov = tiny_overrides(work, 2, **{'split.folds': 3}) if a.quick else {**FIXED, 'train.weights': str(a.weights)}
    ov.update({**IDENTITY, 'paths.data': str(data), 'paths.cache': str(a.cache or WORK / 'crops'),
               'paths.runs': str(work / 'runs'), 'paths.models': str(work / 'models')})
    return load_settings(a.config, {**ov, **dict(kv.split('=', 1) for kv in a.set or [])})


def by_mask_state(sub: Path, answers: Path, eval_df: pd.DataFrame) -> dict:
    """Per true mask state of the eval photos: photos, age and gender macro F1 of a submission, and the share of
    photos whose crop is the centre-crop fallback (no face found): a cue that is not a face if the shares differ."""
    from sklearn.metrics import f1_score
    from mcls.crop import CENTRE
    from mcls.labels import MASK_NAMES, decode
    truth = read_labels(answers).set_index('ImageID').ans
    pred = read_labels(sub).set_index('ImageID').ans.reindex(truth.index)
    (tm, tg, ta), (_, pg, pa) = decode(truth.to_numpy()), decode(pred.to_numpy())
    centre = eval_df.set_index('image_id').crop.reindex(truth.index).str.endswith(f'.{CENTRE}.jpg').to_numpy()
    out = {}
    for m, name in enumerate(MASK_NAMES):
        sel = tm == m
        out[name] = {'photos': int(sel.sum()), 'fallback_share': float(centre[sel].mean()),
                     'age_f1': float(f1_score(ta[sel], pa[sel], average='macro')),
                     'gender_f1': float(f1_score(tg[sel], pg[sel], average='macro'))}
    return out


def point(a) -> dict:
    "One point of the curve: the submission recipe on `persons` training persons with one seed, and the floor."
    work = Path(a.work)
    data = build_data(Path(a.data) if a.data else work / 'data', a.quick, persons=None)
    here = work / f'p{a.persons}'
    s = _settings(a, here, data)
    # a point rerun with --keep (to add the floor, say) reuses its learner and prediction: keep their seconds too
    before = here / f'seed{a.seed}.json'
    earlier = json.loads(before.read_text())['seconds'] if a.keep and before.exists() else {}
    t0 = time.perf_counter()
    table, eval_df = load_crop_fold(s, data)
    load_s = time.perf_counter() - t0
    rows = table.person.isin(stratified_persons(table, a.persons, s.split.seed)).to_numpy()
    truth = read_labels(data / 'eval' / 'answers.csv').set_index('ImageID').loc[eval_df.image_id, 'ans'].to_numpy()
    model_dir = (Path(a.models) / f'p{a.persons}' if a.models else here) / 'models' / f'seed{a.seed}_full'
    if a.models and not model_dir.is_dir(): raise SystemExit(f'{model_dir}: no learners; run that point first')
    train_s = 0.0 if a.models else train_into(table[rows], s, a.seed, None, model_dir, a.keep)
    fold0_s, offsets = 0.0, None
    if a.offsets:     # fitted on the fold-0 validation photos of a learner of these persons, never on eval photos
        fold_dir = here / 'models' / f'seed{a.seed}_fold0'
        fold0_s = train_into(table[rows], s, a.seed, 0, fold_dir, a.keep)
        offsets = tune_on_fold0(fold_dir)
        tuned = here / 'models' / f'seed{a.seed}_tuned'
        shutil.rmtree(tuned, ignore_errors=True)
        shutil.copytree(model_dir, tuned)
        shutil.copy(fold_dir / TUNING_FILE, tuned / TUNING_FILE)
        model_dir = tuned
    sub = here / f'sub_{a.seed}.csv'
    predicted = a.keep and sub.exists()
    t0 = time.perf_counter()
    ev = predict_scores(s, data, model_dir, sub, a.tta, keep=a.keep)
    predict_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    # a screen compares recipes, not the floor, whose first run embeds every photo (about 2,000 s on 2 cores)
    fl = probe(table, eval_df, truth, s.tasks['mask'].arch, None if a.quick else Path(a.weights),
               64 if a.quick else 224, work, rows) if a.floor else None
    res = {'persons': int(a.persons), 'persons_used': int(table.person[rows].nunique()), 'seed': a.seed,
           'models': str(model_dir), 'tta': a.tta, 'set': a.set or [], 'offsets': offsets,
           'train_photos': int(rows.sum()), 'eval_photos': len(eval_df), 'default': ev,
           'probe': fl, 'probe_floor': fl and fl[fl['floor']]['eval'],
           'by_mask_state': by_mask_state(sub, data / 'eval' / 'answers.csv', eval_df),
           'seconds': {'load_and_crop': load_s, 'train': train_s or earlier.get('train', 0.0),
                       'fold0_train': fold0_s or earlier.get('fold0_train', 0.0),
                       'predict': earlier.get('predict', predict_s) if predicted else predict_s,
                       'probe': time.perf_counter() - t0},
           'command': ' '.join(['python', '-m', 'bench.curve', *sys.argv[1:]])}
    here.mkdir(parents=True, exist_ok=True)
    (here / f'seed{a.seed}.json').write_text(json.dumps(res, indent=1, default=float))
    print(json.dumps({k: res[k] for k in ('persons', 'seed', 'train_photos', 'seconds')}, default=float))
    print(f"eval F1_18: recipe {ev['f1_18']:.4f}" + (f", floor {fl[fl['floor']]['eval']['f1_18']:.4f}" if fl else ''))
    return res


def collect(a) -> dict:
    "Every point under --work into one result JSON (summary.learning_curve) and the curve's PNG."
    points = sorted((json.loads(p.read_text()) for p in Path(a.work).glob('p*/seed*.json')),
                    key=lambda p: (p['persons'], p['seed']))
    if not points: raise SystemExit(f'{a.work}: no points; run `python -m bench.curve point ...` first')
    if a.floor_from:  # the floor depends on neither the recipe nor the training seed, only on the persons
        earlier = {p['persons']: p['probe_floor'] for p in json.loads(a.floor_from.read_text())['points']
                   if p['probe_floor']}
        for p in points:
            if not p['probe_floor'] and p['persons'] in earlier:
                p['probe_floor'], p['probe_from'] = earlier[p['persons']], a.floor_from.name
    if missing := [(p['persons'], p['seed']) for p in points if not p['probe_floor']]:
        raise SystemExit(f'{a.work}: points {missing} have no floor: run them again without --no-floor (with --keep), '
                         'or pass --floor-from an earlier collection with a floor at those sizes')
    sizes = sorted({p['persons'] for p in points})
    seeds = sorted({p['seed'] for p in points})
    at = {(p['persons'], p['seed']): p for p in points}

    def lists(get):
        return [[get(at[n, sd]) for sd in seeds if (n, sd) in at] for n in sizes]
    curve = {'persons': [int(n) for n in sizes], 'seeds': seeds,
             'default_f1_18': lists(lambda p: p['default']['f1_18']),
             'probe_f1_18': lists(lambda p: p['probe_floor']['f1_18']),
             **{f'default_{t}_f1': lists(lambda p, t=t: p['default'][t]) for t in LABEL_TASKS},
             **{f'probe_{t}_f1': lists(lambda p, t=t: p['probe_floor'][t]) for t in LABEL_TASKS},
             'train_seconds': lists(lambda p: p['seconds']['train'])}
    out = Path(a.out or RESULTS / f'quality-full-{a.name}-{datetime.now():%Y-%m-%d}.json')
    summary = {'learning_curve': curve}
    if a.beside:      # an earlier collection (the old default), drawn beside this one
        summary['beside'] = {'file': a.beside.name, **json.loads(a.beside.read_text())['summary']}
    res = {'name': a.name, 'date': datetime.now().isoformat(timespec='seconds'), 'work': str(a.work),
           'points': points, 'summary': summary,
           'decisions': [{'source': f.name, **{k: d[k] for k in DECISION_KEYS}}
                         for f in a.decisions or [] for d in json.loads(f.read_text())['decisions']]}
    out.write_text(json.dumps(res, indent=1, default=float))
    png = plot_curve(curve, Path(a.png) if a.png else ROOT / 'docs' / 'learning_curve.png',
                     summary.get('beside', {}).get('learning_curve'))
    print(f'wrote {out} and {png}')
    return res


def screen(a) -> dict:
    """Each row folder against the baseline folder at --persons: `mcls compare` of their eval submissions over the
    eval persons (build_meta.csv), the seeds both have pooled on each side. A row becomes a default only where the
    95% interval of its F1_18 difference lies above 0. One JSON: every point, and `decisions`."""
    from mcls.compare import read_side
    data = Path(a.data)
    points, decisions = [], []

    def side(root: Path, seeds):
        return read_side([root / f'p{a.persons}' / f'sub_{sd}.csv' for sd in seeds], data / 'eval' / 'answers.csv')

    def seeds_of(root: Path) -> dict:
        return {p['seed']: p for p in map(json.loads, map(Path.read_text, (root / f'p{a.persons}').glob('seed*.json')))}
    base = seeds_of(Path(a.baseline))
    points += list(base.values())
    for row in map(Path, a.rows):
        got = seeds_of(row)
        seeds = sorted(set(got) & set(base))
        if not seeds:
            print(f'{row}: no point at {a.persons} persons with a seed the baseline has; skipped')
            continue
        points += list(got.values())
        r = _compared(Path(a.baseline), row, seeds, a, side)
        f = r['metrics']['f1_18']
        decisions.append({'row': row.name, 'persons': a.persons, 'seeds': seeds, 'set': got[seeds[0]].get('set', []),
                          'tta': got[seeds[0]].get('tta', False), 'diff': f['diff'], 'low': f['low'], 'high': f['high'],
                          'becomes_default': f['low'] > 0,
                          'train_seconds': [got[sd]['seconds']['train'] for sd in seeds],
                          'baseline_train_seconds': [base[sd]['seconds']['train'] for sd in seeds],
                          'metrics': r['metrics'], 'n_units': r['n_units'], 'units': r['units']})
        m = r['metrics']
        print(f"{row.name:>12}: F1_18 {f['a']:.4f} -> {f['b']:.4f} {f['diff']:+.4f} [{f['low']:+.4f}, {f['high']:+.4f}]"
              f"  age {m['age']['diff']:+.4f} [{m['age']['low']:+.4f}, {m['age']['high']:+.4f}]"
              f"  gender {m['gender']['diff']:+.4f}  seeds {seeds}"
              f"{'  becomes default' if f['low'] > 0 else ''}")
    out = Path(a.out or RESULTS / f'quality-full-{a.name}-{datetime.now():%Y-%m-%d}.json')
    res = {'name': a.name, 'date': datetime.now().isoformat(timespec='seconds'), 'baseline': str(a.baseline),
           'persons': a.persons, 'command': ' '.join(['python', '-m', 'bench.curve', *sys.argv[1:]]),
           'points': points, 'decisions': decisions}
    out.write_text(json.dumps(res, indent=1, default=float))
    print(f'wrote {out}')
    return res


def _compared(baseline: Path, row: Path, seeds: list, a, side) -> dict:
    """`mcls compare` of a row against the baseline (a minute or two over 1,800 persons), kept in the row's folder
    and reused while neither side's submissions are newer and the baseline, seeds and draws are the same."""
    from mcls.compare import compare
    cache = row / f'p{a.persons}' / 'decision.json'
    key = {'baseline': str(baseline.resolve()), 'seeds': seeds, 'draws': a.draws}
    subs = [r / f'p{a.persons}' / f'sub_{sd}.csv' for r in (baseline, row) for sd in seeds]
    if cache.exists() and cache.stat().st_mtime > max(f.stat().st_mtime for f in subs):
        kept = json.loads(cache.read_text())
        if kept['key'] == key: return kept['result']
    r = compare(side(baseline, seeds), side(row, seeds), persons_map=Path(a.data) / 'build_meta.csv', draws=a.draws)
    r = {k: v for k, v in r.items() if k != 'differences'}
    cache.write_text(json.dumps({'key': key, 'result': r}, default=float))
    return r


def plot_curve(curve: dict, dest: Path, beside: dict | None = None) -> Path:
    """F1_18 and each task's macro F1 against training persons (log x): the recipe and the floor, each seed a dot;
    `beside` (an earlier collection's curve) adds its recipe as 'old default'."""
    from mcls.plots import pyplot, save_figure
    keys = [('f1_18', 'F1 (18 classes)'), *((f'{t}_f1', f'{t} F1') for t in LABEL_TASKS)]
    fig, axes = pyplot().subplots(1, len(keys), figsize=(3.4 * len(keys), 3.0))
    lines = [(curve, 'default', 'tab:blue', 'recipe'), (curve, 'probe', 'tab:grey', 'floor')]
    if beside: lines.insert(1, (beside, 'default', 'tab:orange', 'old default'))
    ticks = sorted({n for c in (curve, beside) if c for n in c['persons']})
    for ax, (k, title) in zip(axes, keys):
        for c, who, colour, label in lines:
            x, vals = c['persons'], c[f'{who}_{k}']
            ax.plot(x, [np.mean(v) for v in vals], '-o', color=colour, label=label)
            for xi, v in zip(x, vals): ax.scatter([xi] * len(v), v, s=8, color=colour, alpha=0.5)
        ax.set(xscale='log', xlabel='training persons (log)', title=title)
        ax.minorticks_off()
        ax.set_xticks(ticks, [str(v) for v in ticks])
    axes[0].legend(fontsize=8)
    return save_figure(fig, dest)


def framing(a) -> dict:
    """How the eval photos are framed, by true mask state: the share MTCNN found no face in (the centre crop), and
    how many of those a fallback detector (`[crop] fallback_detector`, YuNet) finds a face in. Reads the crop cache
    of the default settings (cropping what it lacks); no training."""
    from PIL import Image
    from mcls.crop import CENTRE, attach_crops, fallback_face
    from mcls.dataset import load_eval
    from mcls.labels import MASK_NAMES, decode
    s = load_settings(overrides={'paths.cache': str(a.cache)}) if a.cache else load_settings()
    eval_df, _ = attach_crops(load_eval(a.data).assign(split='eval'), s.crop, s.paths.cache, progress=False)
    truth = read_labels(a.data / 'eval' / 'answers.csv').set_index('ImageID').ans
    mask = dict(zip(truth.index, decode(truth.to_numpy())[0]))
    t0 = time.perf_counter()
    rows = []
    for r in eval_df.itertuples():
        centre = r.crop.endswith(f'.{CENTRE}.jpg')
        found = centre and fallback_face(Image.open(r.file).convert('RGB'), a.detector) is not None
        rows.append((mask[r.image_id], centre, found))
    df = pd.DataFrame(rows, columns=['mask', 'centre', 'found'])
    res = {'date': datetime.now().isoformat(timespec='seconds'), 'data': str(a.data), 'detector': str(a.detector),
           'eval_photos': len(df), 'detector_seconds': time.perf_counter() - t0,
           'command': ' '.join(['python', '-m', 'bench.curve', *sys.argv[1:]]),
           'by_mask_state': {name: {'photos': int((df['mask'] == i).sum()),
                                    'centre_share': float(df.centre[df['mask'] == i].mean()),
                                    'centre_with_fallback_share':
                                        float((df.centre & ~df.found)[df['mask'] == i].mean())}
                             for i, name in enumerate(MASK_NAMES)}}
    out = Path(a.out or RESULTS / f'framing-{datetime.now():%Y-%m-%d}.json')
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res['by_mask_state'], indent=1))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('point', help='one (persons, seed) point')
    p.add_argument('--persons', type=int, required=True)
    p.add_argument('--seed', type=int, required=True)
    p.add_argument('--data', type=Path, help='the whole maskfaces build (default: built into --work)')
    p.add_argument('--cache', type=Path, help='crop cache (default: runs/curve/crops)')
    p.add_argument('--config', type=Path)
    p.add_argument('--set', action='append', help='section.key=value override of the recipe (repeatable)')
    p.add_argument('--weights', type=Path, default=WEIGHTS)
    p.add_argument('--keep', action='store_true',
                   help='reuse the learner and prediction of an earlier run of this point')
    p.add_argument('--models', type=Path,
                   help="predict with another --work folder's learners of this point (no training)")
    p.add_argument('--tta', action='store_true', help="predict with the recipe's TTA")
    p.add_argument('--offsets', action='store_true',
                   help='predict with decision offsets fitted on the validation photos of a fold-0 learner of these '
                        'persons')
    p.add_argument('--no-floor', dest='floor', action='store_false',
                   help='skip the frozen-feature floor (screens of a recipe change; collect needs the floor or '
                        '--floor-from)')
    p.add_argument('--quick', action='store_true', help='tiny synthetic data and model: checks the code runs')
    p.add_argument('--work', type=Path, default=WORK)
    c = sub.add_parser('collect', help='every point into one result JSON and the PNG')
    c.add_argument('--name', default='default')
    c.add_argument('--work', type=Path, default=WORK)
    c.add_argument('--out', type=Path)
    c.add_argument('--png', type=Path)
    c.add_argument('--beside', type=Path, help="an earlier collection's JSON (the old default), drawn beside this one")
    c.add_argument('--floor-from', type=Path,
                   help="an earlier collection's JSON whose floor serves points run with --no-floor (same persons)")
    c.add_argument('--decisions', type=Path, nargs='*', help="screen JSONs whose decisions this collection lists")
    r = sub.add_parser('screen', help='row folders against a baseline folder: decisions by mcls compare')
    r.add_argument('rows', nargs='+', type=Path, help='--work folders of the rows')
    r.add_argument('--baseline', type=Path, required=True)
    r.add_argument('--persons', type=int, required=True)
    r.add_argument('--data', type=Path, default=ROOT / 'data' / 'maskfaces', help='the build (answers, build_meta.csv)')
    r.add_argument('--draws', type=int, default=2000)
    r.add_argument('--name', default='screen')
    r.add_argument('--out', type=Path)
    f = sub.add_parser('framing', help='the centre-crop share by mask state, and what a fallback detector finds')
    f.add_argument('--data', type=Path, required=True, help='a build with eval/answers.csv')
    f.add_argument('--cache', type=Path)
    f.add_argument('--detector', type=Path, required=True, help='YuNet ONNX ([crop] fallback_detector)')
    f.add_argument('--out', type=Path)
    a = ap.parse_args(argv)
    return {'point': point, 'collect': collect, 'screen': screen, 'framing': framing}[a.cmd](a)


if __name__ == '__main__':
    main()
