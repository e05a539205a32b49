"""The quality protocol: one command behind every recipe claim (docs/quality.md).

    python -m bench.quality --seeds 777 1                       # the default recipe (settings.ini) + the floor
    python -m bench.quality --seeds 777 1 --config configs/seed.ini --name seed --no-probe
    python -m bench.quality --seeds 777 1 --oof --no-probe      # + the recipe on folds 1-4: out-of-fold evidence
    python -m bench.quality --seeds 777 1 --full --no-probe     # + a learner on every training person
    python -m bench.quality --quick                             # tiny synthetic data, tiny model (CI)

Fixed: the 600-person maskfaces build (make_maskfaces.py --persons 600, its default build seed), fold 0 of the
person-aware split as validation, tf_efficientnet_lite0 with the offline ImageNet weights of ../shared/weights.
The seeds are training seeds (fastai's set_seed; the albumentations pipelines follow torch's seed). In the same
run, the floor: logistic regression on frozen ImageNet features of the same backbone, trained on exactly the
learners' training rows, its C and class weighting chosen on fold 0, on face crops and on whole photos at 224 px.
Decisions are made on fold 0 (with --oof also on all five folds' validation photos); eval/answers.csv only
reports. Writes bench/results/quality-<name>-<date>.json after
every stage, whose `summary` holds per-seed lists.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bench.common import IDENTITY, RESULTS, ROOT, SHARED, WEIGHTS, Report, load_crop_fold, scores
from bench.copies import COPIES
from mcls.demo import tiny_overrides
from mcls.evaluate import evaluate_files, grouping_quality, read_labels
from mcls.labels import LABEL_TASKS, decode, encode
from mcls.learner import norm_stats
from mcls.predict import predict_eval, predict_frame
from mcls.pseudo import add_pseudo
from mcls.settings import TASKS, learners_for, load_settings
from mcls.train import train_learners, with_seed
from mcls.tune import TUNING_FILE, apply_offsets, fit_offsets, load_oof, write_offsets

PERSONS = 600
# the protocol's fixed part; the recipe (sizes, rates, epochs, heads, pipelines, TTA) comes from the settings
FIXED = {'train.arch': 'tf_efficientnet_lite0', 'train.pretrained': 'true', 'split.folds': '5', 'split.by': 'person',
         'split.seed': '777'}
PROBE_GRID = [(c, w) for c in (0.01, 0.03, 0.1, 0.3, 1.0) for w in (None, 'balanced')]


def build_data(dest: Path, quick: bool, persons: int | None = PERSONS) -> Path:
    "The fixed data set: the 600-person maskfaces build, the whole one (persons None), or a tiny synthetic one."
    if (dest / 'eval' / 'answers.csv').exists(): return dest
    if quick:
        from mcls.synth import make_dataset
        make_dataset(dest, persons=15, eval_persons=3, seed=5)
        return dest
    tool = SHARED / 'tools' / 'make_maskfaces.py'
    subprocess.run([sys.executable, str(tool), '--src', str(SHARED / 'data' / 'maskfaces' / 'src'), '--out', str(dest),
                    *(['--persons', str(persons)] if persons else [])], check=True, stdout=subprocess.DEVNULL)
    return dest


# ---------------------------------------------------------------- the floor: a frozen-feature probe

@torch.no_grad()
def features(files: list[str], arch: str, weights: Path | None, size: int, batch: int = 64) -> np.ndarray:
    "Globally pooled ImageNet features of photos resized (squashed) to `size`, as the learners see them."
    from PIL import Image
    import timm
    kw = {'pretrained_cfg_overlay': dict(file=str(weights))} if weights else {}
    model = timm.create_model(arch, pretrained=weights is not None, num_classes=0, **kw).eval()
    model = model.to(memory_format=torch.channels_last)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in norm_stats(arch))
    out = []
    for i in range(0, len(files), batch):
        ims = [np.asarray(Image.open(f).convert('RGB').resize((size, size),
                                                              Image.BILINEAR)) for f in files[i:i + batch]]
        x = (torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float() / 255 - mean) / std
        out.append(model(x.contiguous(memory_format=torch.channels_last)).float().numpy())
    return np.concatenate(out)


def probe(table: pd.DataFrame, eval_df: pd.DataFrame, truth: np.ndarray, arch: str, weights: Path | None,
          size: int, cache: Path, rows: np.ndarray | None = None) -> dict:
    """Logistic regression per task on frozen features, fitted on the learners' training rows (fold != 0); C and
    class weighting chosen per task by fold-0 macro F1; on face crops and on whole photos. Features of every row
    of `table` are cached in `cache`; `rows` (a mask) fits on a subset of them (the learning curve's persons)."""
    rows = np.ones(len(table), bool) if rows is None else np.asarray(rows)
    sub = table[rows]
    tr, va = sub.fold.to_numpy() != 0, sub.fold.to_numpy() == 0
    ys = {'mask': sub['mask'].to_numpy(), 'gender': sub.gender.to_numpy(), 'age': sub.age_group.to_numpy()}
    res = {}
    for view, col in (('crops', 'crop'), ('photos', 'file')):
        f = cache / f'probe_{view}_{size}.npz'
        if f.exists(): z = np.load(f); X, E = z['X'], z['E']
        else:
            X, E = features(table[col].tolist(), arch, weights, size), features(eval_df[col].tolist(), arch, weights,
                                                                                size)
            np.savez(f, X=X, E=E)
        X = X[rows]
        pred_valid, pred_eval, chosen = {}, {}, {}
        for t, y in ys.items():
            best = None
            for c, w in PROBE_GRID:
                m = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight=w, max_iter=3000)).fit(X[tr],
                                                                                                                y[tr])
                pv = m.predict(X[va])
                f1 = f1_score(y[va], pv, average='macro')
                if best is None or f1 > best[0]: best = (f1, c, w, m, pv)
            _, c, w, m, pv = best
            chosen[t], pred_valid[t], pred_eval[t] = {'C': c, 'class_weight': w}, pv, m.predict(E)
        res[view] = {'chosen': chosen,
                     'valid': scores(encode(*(pred_valid[t] for t in LABEL_TASKS)), sub.label.to_numpy()[va]),
                     'eval': scores(encode(*(pred_eval[t] for t in LABEL_TASKS)), truth)}
    # the floor is the view that does better on fold 0 (the view is a choice like any other)
    res['floor'] = max(('crops', 'photos'), key=lambda v: res[v]['valid']['f1_18'])
    return res


# ---------------------------------------------------------------- the recipe under test

def valid_scores(model_dir: Path) -> dict:
    "Fold-0 scores of the exported learners from their saved validation probabilities (true age groups)."
    z = {t: np.load(model_dir / f'{t}.valid.npz') for t in TASKS}
    pred = encode(*(z[t]['probs'].argmax(1) for t in LABEL_TASKS))
    return scores(pred, z['mask']['labels'])


def crossfit_labels(probs: dict[str, np.ndarray], truth: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """18-class labels decided with per-task offsets fitted on the other parts' photos and applied to each part's
    (`parts`: one part id per photo), so no photo is decided by offsets fitted on it."""
    y = dict(zip(LABEL_TASKS, decode(truth)))
    tuned = {t: np.zeros(len(truth), int) for t in TASKS}
    for p in np.unique(parts):
        fit_on = parts != p
        for t in TASKS:
            off, _, _ = fit_offsets(probs[t][fit_on], y[t][fit_on])
            tuned[t][~fit_on] = apply_offsets(probs[t][~fit_on], off).argmax(1)
    return encode(*(tuned[t] for t in LABEL_TASKS))


def fold0_decisions(table: pd.DataFrame, s, model_dir: Path) -> dict:
    """Evidence on fold 0 for the two choices that training does not make. TTA: fold-0 F1 with the recipe's TTA.
    Decision offsets: fitted on fold 0 they always win there, so cross-fit them: fit on one half of fold 0's persons,
    score on the other half, and swap."""
    valid = table[table.fold == 0].reset_index(drop=True)
    labels, _ = predict_frame(valid, [model_dir], s.predict, tta=True, tune=False)
    out = {'tta': scores(labels, valid.label.to_numpy())}
    z = {t: np.load(model_dir / f'{t}.valid.npz') for t in TASKS}
    person = valid.set_index('file').loc[z['mask']['files'], 'person'].to_numpy()
    half = np.isin(person, np.unique(person)[::2])
    truth = z['mask']['labels']
    out['crossfit_tuned'] = scores(crossfit_labels({t: z[t]['probs'] for t in TASKS}, truth, half), truth)
    return out


def fold0_persons(table: pd.DataFrame, s, model_dir: Path) -> tuple[dict, dict]:
    """Fold-0 photos grouped by face identity as predict --persons auto groups eval photos (threshold from a
    jittered copy of fold 0), and the learners' validation answers decided per photo and, for each task alone,
    per person: Predictions for `mcls compare`, and the grouping's quality against the true persons."""
    from mcls.compare import Predictions
    from mcls.persons import consistent_labels, group_eval, group_quality
    z = {t: np.load(model_dir / f'{t}.valid.npz') for t in TASKS}
    files, truth = z['mask']['files'], z['mask']['labels']
    valid = table.set_index('file').loc[files]
    groups, _, info = group_eval(s, valid.crop.tolist())
    logp = {t: apply_offsets(z[t]['probs']) for t in TASKS}
    preds = {'photo': Predictions(str(model_dir), files, truth, encode(*(logp[t].argmax(1) for t in LABEL_TASKS)))}
    for t in LABEL_TASKS:
        preds[t] = Predictions(f'{model_dir} per person: {t}', files, truth,
                               consistent_labels(logp, groups, s.predict.persons_margin, (t,))[0])
    return preds, {**group_quality(groups, valid.person.to_numpy()), 'threshold': info['threshold'],
                   'align': info['align']}


def persons_decisions(preds: list[dict], draws: int = 2000) -> dict:
    """Per task: per person (B) against per photo (A) on fold 0, both seeds pooled, by `mcls compare` over persons.
    The rule: decide a task per person where B's mean is higher and the interval's upper end >= 0."""
    from mcls.compare import compare
    units = (np.array([str(Path(f).parent) for f in preds[0]['photo'].keys]), 'persons (train.csv folders)')
    out = {}
    for t in LABEL_TASKS:
        r = compare([p['photo'] for p in preds], [p[t] for p in preds], draws=draws, units=units)
        m = r['metrics']
        out[t] = {'task_f1': m[t], 'f1_18': m['f1_18'], 'per_person': m[t]['diff'] > 0 and m[t]['high'] >= 0}
    out['chosen'] = [t for t in LABEL_TASKS if out[t]['per_person']]
    return out


def decide(baseline: Path, work: Path, seeds: list[int], draws: int = 2000) -> dict:
    """The decision rule: this run's recipe (B) against the baseline's (A), each seed's fold-0 learner, both seeds
    pooled, by `mcls compare` over fold 0's persons. B becomes the default only where the 95% interval of its
    F1_18 difference lies above 0; otherwise the cheaper setting stays."""
    from mcls.compare import compare, read_side
    side = lambda root: read_side([root / 'models' / f'seed{sd}' for sd in seeds])     # noqa: E731
    r = compare(side(baseline), side(work), draws=draws)
    f = r['metrics']['f1_18']
    return {'baseline': str(baseline), 'metrics': r['metrics'], 'units': r['units'], 'n_units': r['n_units'],
            'becomes_default': f['low'] > 0}


def train_into(table: pd.DataFrame, s, seed: int, fold: int | None, model_dir: Path, keep: bool = False) -> float:
    """Train what `mcls train all` trains ([train] mode) with one training seed, `fold` held out (None: every
    photo), into `model_dir`; seconds. keep: a folder whose learners were exported with these very settings
    (seed and paths included) is kept as it is, less the decision offsets a later stage fitted on it."""
    ss, learners = with_seed(s, seed), learners_for('all', s)
    ini = [model_dir / f'{t}.settings.ini' for t in learners]
    if keep and all(p.exists() and p.read_text() == ss.to_ini() for p in ini):
        (model_dir / TUNING_FILE).unlink(missing_ok=True)
        return 0.0
    t0 = time.perf_counter()
    shutil.rmtree(model_dir, ignore_errors=True)
    train_learners(table, ss, learners, [fold], export_dir=model_dir, progress=False)
    return time.perf_counter() - t0


def train_recipe(table: pd.DataFrame, s, seed: int, model_dir: Path, keep: bool = False) -> tuple[dict, float]:
    "The recipe on fold 0 with one training seed; fold-0 scores and seconds."
    secs = train_into(table, s, seed, 0, model_dir, keep)
    scores = valid_scores(model_dir)
    scores['decisions'] = fold0_decisions(table, s, model_dir)
    return scores, secs


def tune_on_fold0(model_dir: Path) -> dict:
    """What `mcls tune` does over every fold, on fold 0 alone (about 6 persons aged 60+: noisy): decision offsets
    written beside the learners, so later predictions apply them."""
    fitted = {t: fit_offsets(*load_oof([model_dir], t)) for t in TASKS}
    write_offsets(model_dir, {t: f[0].round(3).tolist() for t, f in fitted.items()},
                  {t: {'f1_before': f[1], 'f1_after': f[2]} for t, f in fitted.items()})
    return {t: f[0].round(3).tolist() for t, f in fitted.items()}


def oof_decisions(model_dirs: list[Path], saved: dict[str, Path]) -> dict:
    """Evidence from every fold (out of fold: five times fold 0's persons, about 30 aged 60+): the learners' F1
    over all folds' validation photos, plain and with decision offsets cross-fitted by fold (fitted on the other
    folds, applied to each). Offsets fitted on all folds then decide the fold-0 learner's saved eval answers
    (`saved`: copy -> probabilities), as `mcls tune` over five folds would."""
    z = [{t: np.load(d / f'{t}.valid.npz') for t in TASKS} for d in model_dirs]
    probs = {t: np.concatenate([zi[t]['probs'] for zi in z]) for t in TASKS}
    truth = np.concatenate([zi['mask']['labels'] for zi in z])
    fold = np.concatenate([np.full(len(zi['mask']['labels']), k) for k, zi in enumerate(z)])
    order = LABEL_TASKS
    y = dict(zip(order, decode(truth)))
    everywhere = {t: fit_offsets(probs[t], y[t])[0] for t in TASKS}
    out = {'folds': len(z), 'photos': int(len(truth)),
           'plain': scores(encode(*(probs[t].argmax(1) for t in order)), truth),
           'crossfit_tuned': scores(crossfit_labels(probs, truth, fold), truth),
           'offsets': {t: everywhere[t].round(3).tolist() for t in TASKS}}
    for copy, (probs_file, answers) in saved.items():
        zc = np.load(probs_file)
        ans = read_labels(answers).set_index('ImageID').loc[zc['image_ids'], 'ans'].to_numpy()
        out[f'{copy}_tuned'] = scores(encode(*(apply_offsets(zc[t], everywhere[t]).argmax(1) for t in order)), ans)
    return out


def predict_scores(s, data: Path, model_dir: Path, out: Path, tta: bool, persons: str = 'off',
                   keep: bool = False) -> dict:
    """Eval scores of one prediction; with persons = auto also the groups' purity and completeness.
    keep: a prediction already written (with its probabilities) is scored, not made again."""
    sd = dataclasses.replace(s, paths=dataclasses.replace(s.paths, data=data))
    if not (keep and out.exists() and Path(f'{out}.probs.npz').exists()):
        predict_eval(sd, [model_dir], out, tta=tta, progress=False, persons=persons)
    sc = evaluate_files(out, data / 'eval' / 'answers.csv')
    res = {'f1_18': sc.f1, **sc.task_f1}
    if persons == 'auto': res['groups'] = grouping_quality(out, data / 'build_meta.csv')
    return res


# every prediction of a seed's learners: (name, which eval copy, TTA, persons)
PREDICTIONS = [('eval', 'eval', False, 'off'), ('eval_tta', 'eval', True, 'off'), ('eval_persons', 'eval', False,
                                                                                   'auto'),
               ('degraded', 'degraded', False, 'off'), ('degraded_tta', 'degraded', True, 'off'),
               ('jittered', 'jittered', False, 'off'), ('jittered_persons', 'jittered', False, 'auto')]


def copies(data: Path, work: Path, rep: Report) -> dict[str, Path]:
    "The eval set as built, a degraded copy (real capture) and a jittered copy (person grouping); made once."
    out = {'eval': data}
    for name, make in COPIES.items():
        dest = out[name] = work / name
        if not (dest / '.complete').exists():      # a copy cut short is redone
            t0 = time.perf_counter()
            make(data, dest)
            (dest / '.complete').touch()
            rep.stage(f'{name}_copy', time.perf_counter() - t0)
    return out


def spread(v: list[float]) -> dict:
    return {'mean': float(np.mean(v)), 'spread': float(np.max(v) - np.min(v)), 'values': v}


def _setup(a):
    "The build, the protocol's settings (every path under --work) and the report it fills."
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    data = build_data(Path(a.data) if a.data else work / 'data', a.quick)
    weights = None if a.quick else Path(a.weights)
    # --quick: the recipe's own shape (fit, heads, pipelines) on the tiny model, two epochs
    ov = tiny_overrides(work, 2, **{'split.folds': 3}) if a.quick else {**FIXED, 'train.weights': str(weights)}
    ov.update({**IDENTITY, 'paths.data': str(data), 'paths.cache': str(a.cache or work / 'crops'),
               'paths.runs': str(work / 'runs'),
               'paths.models': str(work / 'models'), 'paths.reports': str(work / 'reports')})
    extra = dict(kv.split('=', 1) for kv in a.set or [])
    s = load_settings(a.config, {**ov, **extra})
    name = a.name or (Path(a.config).stem if a.config else 'default')
    out = Path(a.out or RESULTS / f"quality-{name}{'-quick' if a.quick else ''}-{datetime.now():%Y-%m-%d}.json")
    mode = s.tasks['mask'].mode
    recipe = {t: {k: str(v) for k, v in dataclasses.asdict(s.tasks[t]).items() if k not in ('task', 'seed', 'weights')}
              for t in (('joint',) if mode == 'joint' else TASKS)}
    rep = Report(out, name=name, command=' '.join(['python', '-m', 'bench.quality', *sys.argv[1:]]),
                 date=datetime.now().isoformat(timespec='seconds'), torch=torch.__version__, cores=os.cpu_count(),
                 data=str(data), quick=a.quick, seeds_run=a.seeds, mode=mode, recipe=recipe,
                 predict={k: str(v) for k, v in dataclasses.asdict(s.predict).items()}, seeds={})
    return work, data, weights, s, rep


def _seed(a, rep: Report, s, seed: int, table: pd.DataFrame, data: Path, roots: dict, work: Path):
    """Everything of one seed: the recipe on fold 0 and its predictions (plain, TTA, persons, tuned, on each eval
    copy), and with --oof, --full, --pseudo those learners too. Returns fold 0's person predictions, if any."""
    model_dir = work / 'models' / f'seed{seed}'
    r = rep.data['seeds'][str(seed)] = {}
    r['valid'], secs = train_recipe(table, s, seed, model_dir, a.keep)
    rep.stage(f'train_seed{seed}', secs)
    for key, copy, tta, persons in PREDICTIONS:
        t0 = time.perf_counter()
        r[key] = predict_scores(s, roots[copy], model_dir, work / f'sub_{seed}_{key}.csv', tta, persons, a.keep)
        rep.stage(f'predict_{key}_seed{seed}', time.perf_counter() - t0)
    fold0 = None
    if s.predict.identity_weights is not None and Path(s.predict.identity_weights).is_file():
        t0 = time.perf_counter()
        fold0, r['fold0_groups'] = fold0_persons(table, s, model_dir)
        rep.stage(f'fold0_persons_seed{seed}', time.perf_counter() - t0)
    r['offsets'] = tune_on_fold0(model_dir)      # the same learners, decisions tuned: reported beside
    for key, copy, persons in (('eval_tuned', 'eval', 'off'), ('eval_persons_tuned', 'eval', 'auto')):
        r[key] = predict_scores(s, roots[copy], model_dir, work / f'sub_{seed}_{key}.csv', False, persons, a.keep)
    if a.oof:        # the recipe on every other fold too: decisions from five times the persons
        t0 = time.perf_counter()
        dirs = [model_dir]
        for k in range(1, s.split.folds):
            dirs.append(work / 'models' / f'seed{seed}_fold{k}')
            train_into(table, s, seed, k, dirs[-1], a.keep)
        saved = {c: (work / f'sub_{seed}_{c}.csv.probs.npz', roots[c] / 'eval' / 'answers.csv') for c in roots}
        r['oof'] = oof_decisions(dirs, saved)
        rep.stage(f'oof_seed{seed}', time.perf_counter() - t0)
    if a.full:       # the submission recipe: every training person, the fixed epoch count
        t0 = time.perf_counter()
        fdir = work / 'models' / f'seed{seed}_full'
        train_into(table, s, seed, None, fdir, a.keep)
        for copy in roots:
            r[f'full_{copy}'] = predict_scores(s, roots[copy], fdir, work / f'sub_{seed}_full_{copy}.csv', False,
                                               keep=a.keep)
        # fold-0 evidence for it (a full learner has no fold left to validate on): the same recipe trained
        # without fold 1's persons; if 3/4 of the persons score below 4/4 on fold 0, 5/4 is the next step
        ldir = work / 'models' / f'seed{seed}_less'
        train_into(table[table.fold != 1], s, seed, 0, ldir, a.keep)
        r['valid_less'] = valid_scores(ldir)
        rep.stage(f'full_seed{seed}', time.perf_counter() - t0)
    if a.pseudo:     # transductive: trained on confidently predicted eval photos, reported apart
        t0 = time.perf_counter()
        ps_table = add_pseudo(table, s, work / f'sub_{seed}_eval_persons.csv.probs.npz', a.pseudo)
        r['pseudo_rows'] = int(ps_table.pseudo.sum())
        pdir = work / 'models' / f'seed{seed}_pseudo'
        train_into(ps_table, s, seed, 0, pdir)     # never kept: which photos joined depends on MIN_PROB
        r['eval_persons_pseudo'] = predict_scores(s, data, pdir, work / f'sub_{seed}_pseudo.csv', False, 'auto')
        rep.stage(f'pseudo_seed{seed}', time.perf_counter() - t0)
    return fold0


def _summary(a, d: dict) -> dict:
    "The per-seed lists the protocol reports, from every seed's figures."
    runs = [d['seeds'][str(sd)] for sd in a.seeds]
    summ = {f'default_{k}f1_18': [r[key]['f1_18'] for r in runs]
            for k, key in (('', 'eval'), ('tta_', 'eval_tta'), ('degraded_', 'degraded'), ('degraded_tta_',
                                                                                           'degraded_tta'))}
    summ['default_tuned_f1_18'] = [r['eval_tuned']['f1_18'] for r in runs]
    summ['persons_f1_18'] = [r['eval_persons']['f1_18'] for r in runs]
    summ['persons_tuned_f1_18'] = [r['eval_persons_tuned']['f1_18'] for r in runs]
    summ['jittered_f1_18'] = [r['jittered']['f1_18'] for r in runs]
    summ['jittered_persons_f1_18'] = [r['jittered_persons']['f1_18'] for r in runs]
    for key in ('eval_persons', 'jittered_persons'):
        for q in ('purity', 'completeness'): summ[f'{key}_{q}'] = [r[key]['groups'][q] for r in runs]
    summ['persons_gender_f1'] = [r['eval_persons']['gender'] for r in runs]
    summ['jittered_purity'] = summ['jittered_persons_purity']
    summ['jittered_completeness'] = summ['jittered_persons_completeness']
    if a.oof:
        for key in ('plain', 'crossfit_tuned', 'eval_tuned', 'degraded_tuned', 'jittered_tuned'):
            summ[f'oof_{key}_f1_18'] = [r['oof'][key]['f1_18'] for r in runs]
    if a.full:
        for copy in ('eval', 'degraded',
                     'jittered'): summ[f'full_{copy}_f1_18'] = [r[f'full_{copy}']['f1_18'] for r in runs]
        summ['valid_less_f1_18'] = [r['valid_less']['f1_18'] for r in runs]
        summ['valid_less_mean_task_f1'] = [r['valid_less']['mean_task'] for r in runs]
    if a.pseudo: summ['persons_pseudo_f1_18'] = [r['eval_persons_pseudo']['f1_18'] for r in runs]
    summ['valid_f1_18'] = [r['valid']['f1_18'] for r in runs]
    summ['valid_mean_task_f1'] = [r['valid']['mean_task'] for r in runs]
    summ['valid_tta_f1_18'] = [r['valid']['decisions']['tta']['f1_18'] for r in runs]
    summ['valid_crossfit_tuned_f1_18'] = [r['valid']['decisions']['crossfit_tuned']['f1_18'] for r in runs]
    for t in LABEL_TASKS:
        summ[f'valid_{t}_f1'] = [r['valid'][t] for r in runs]
        summ[f'eval_{t}_f1'] = [r['eval'][t] for r in runs]
    if a.probe:
        fl = d['probe'][d['probe']['floor']]
        summ['probe_f1_18'] = [fl['eval']['f1_18']] * len(runs)
        summ['probe_valid_f1_18'] = [fl['valid']['f1_18']] * len(runs)
        summ['default_minus_probe'] = [x - y for x, y in zip(summ['default_f1_18'], summ['probe_f1_18'])]
    return summ


def run(a) -> dict:
    "The protocol's steps in order, the report rewritten after each."
    t_all = time.perf_counter()
    work, data, weights, s, rep = _setup(a)
    t0 = time.perf_counter()
    table, eval_df = load_crop_fold(s, data)
    truth = read_labels(data / 'eval' / 'answers.csv').set_index('ImageID').loc[eval_df.image_id, 'ans'].to_numpy()
    rep.data['rows'] = {'train': int((table.fold != 0).sum()), 'valid': int((table.fold == 0).sum()),
                        'eval': len(eval_df)}
    rep.stage('load_and_crop', time.perf_counter() - t0)
    roots = copies(data, work, rep)
    if a.probe:
        t0 = time.perf_counter()
        rep.data['probe'] = probe(table, eval_df, truth, s.tasks['mask'].arch, weights, 64 if a.quick else 224, work)
        rep.stage('probe', time.perf_counter() - t0)
    fold0_preds = {seed: _seed(a, rep, s, seed, table, data, roots, work) for seed in a.seeds}
    fold0_preds = {k: v for k, v in fold0_preds.items() if v is not None}
    if fold0_preds: rep.data['persons_decisions'] = persons_decisions(list(fold0_preds.values()))
    if a.baseline: rep.data['decision'] = decide(Path(a.baseline), work, a.seeds)
    rep.data['summary'] = summ = _summary(a, rep.data)
    rep.data['summary_stats'] = {k: spread(v) for k, v in summ.items()}
    rep.data['wall_s'] = round(time.perf_counter() - t_all, 1)
    rep.save()
    return rep.data


def print_report(r: dict):
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"quality protocol: {r['name']} ({r['mode']}), seeds {r['seeds_run']}, {r['wall_s']:.0f} s",
              title_justify='left')
    for c in ('measure', 'mean', 'spread', 'per seed'): t.add_column(c, justify='left' if c == 'measure' else 'right')
    for k, v in r['summary_stats'].items():
        t.add_row(k, f"{v['mean']:.4f}", f"{v['spread']:.4f}", ' '.join(f'{x:.4f}' for x in v['values']))
    if 'probe' in r:
        for view in ('crops', 'photos'):
            p = r['probe'][view]
            t.add_row(f'probe {view}: fold-0 / eval F1_18', '', '',
                      f"{p['valid']['f1_18']:.4f} / {p['eval']['f1_18']:.4f} (gender {p['eval']['gender']:.3f}, "
                      f"age {p['eval']['age']:.3f})")
    for name, st in r['stages'].items(): t.add_row(f'wall s: {name}', '', '', f"{st['seconds']:.0f}")
    Console(width=150).print(t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--seeds', type=int, nargs='+', default=[777, 1])
    ap.add_argument('--config', type=Path, help='a settings file layered over settings.ini: the recipe under test')
    ap.add_argument('--set', action='append', help='section.key=value override of the recipe (repeatable)')
    ap.add_argument('--name', help='the ladder row (default: the config file stem, or default)')
    ap.add_argument('--probe', action=argparse.BooleanOptionalAction, default=True, help='fit the floor in this run')
    ap.add_argument('--pseudo', type=float, metavar='MIN_PROB',
                    help='also train on eval photos predicted with every task at least MIN_PROB (transductive)')
    ap.add_argument('--oof', action='store_true',
                    help='also train on every other fold (folds - 1 more trainings per seed): out-of-fold scores, '
                         'decision offsets cross-fitted by fold, eval with offsets fitted on every fold')
    ap.add_argument('--full', action='store_true',
                    help='also train on every training person for the fixed epochs (the submission recipe) and, as '
                         'its fold-0 evidence, on all but fold 1')
    ap.add_argument('--keep', action='store_true',
                    help="reuse --work's learners exported with this very recipe and seed, and its predictions: "
                         'a run cut short, or extended with --oof / --full, does only what is missing')
    ap.add_argument('--baseline', type=Path, metavar='WORK',
                    help="another run's --work folder (same seeds and data): decide this recipe against it on fold 0 "
                         'with mcls compare, both seeds pooled (JSON `decision`)')
    ap.add_argument('--quick', action='store_true', help='tiny synthetic data and model: checks the protocol runs')
    ap.add_argument('--data', type=Path, help='the fixed build (default: built into --work)')
    ap.add_argument('--cache', type=Path, help='crop cache (default: inside --work)')
    ap.add_argument('--weights', type=Path, default=WEIGHTS)
    ap.add_argument('--work', type=Path, default=ROOT / 'runs' / 'quality')
    ap.add_argument('--out', type=Path, help='result JSON (default bench/results/quality-<name>-<date>.json)')
    a = ap.parse_args(argv)
    if not a.quick and not a.weights.exists():
        ap.error(f'{a.weights}: no ImageNet weights for tf_efficientnet_lite0 (see ../shared/README.md)')
    r = run(a)
    print_report(r)
    return r


if __name__ == '__main__':
    main()
