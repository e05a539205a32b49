"""Benchmark: the whole mcls workflow on a data set in the competition layout (with eval/answers.csv), quality and
speed side by side with (a) a plain PyTorch + timm loop, (b) the model-only ceiling and (c) the input pipeline alone.

    python -m bench.run --data data/mf150 --preset cpu
    python -m bench.run --data /tmp/maskfaces --preset gpu --weights .dev/weights/tf_efficientnet_lite0.in1k.safetensors

Writes bench/results/<date>-<device>-<preset>.json after every stage (a run cut short still reports what it
finished) and prints one table at the end.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.metrics import f1_score

from bench.common import RESULTS, ROOT, WEIGHTS, Report
from bench.copies import degrade_copy
from mcls.augment import Squish
from mcls.crop import attach_crops
from mcls.demo import TINY
from mcls.dataset import load_eval, load_train
from mcls.decode import OpenCrop
from mcls.evaluate import evaluate_files
from mcls.folds import assign_folds
from mcls.learner import TARGET, make_model, norm_stats, resolve_workers, task_dls, task_targets
from mcls.precision import describe, resolve_precision
from mcls.predict import predict_eval
from mcls.settings import TASKS, load_settings
from mcls.train import train_task, with_seed

# epochs: mcls per task; plain_epochs: the reference loop (its per-epoch speed and scores are what is compared).
# lr: mcls's one-cycle peak per task. cpu: chosen on the validation fold of a 300-person build (lite0, 128 px,
# 3 epochs; bench/studies/lr_sweep.py, docs/benchmarks.md); the plain loop keeps the seed's constant Adam rates
# (3e-4 / 1e-4 / 1e-4).
# gpu: 1e-3 everywhere, the middle of that sweep; not yet measured on a GPU.
PRESETS = {
    'cpu': dict(arch='tf_efficientnet_lite0', size=128, batch=32, epochs=dict(mask=5, age=5, gender=5), plain_epochs=2,
                lr=dict(mask=3e-3, age=1e-3, gender=1e-3), tta_passes=2, ceiling_seconds=30.0, ceiling_min_steps=5,
                input_seconds=20.0, pretrained=True),
    'gpu': dict(arch='tf_efficientnet_lite0', size=224, batch=64, epochs=dict(mask=10, age=4, gender=10),
                plain_epochs=3,
                lr=dict(mask=1e-3, age=1e-3, gender=1e-3), tta_passes=4, ceiling_seconds=30.0, ceiling_min_steps=100,
                input_seconds=20.0, pretrained=True),
    'tiny': dict(arch=TINY['train.arch'], size=int(TINY['train.size']), batch=int(TINY['train.batch']),
                 epochs=dict(mask=1, age=1, gender=1), plain_epochs=1,
                 lr=dict(mask=3e-3, age=3e-3, gender=3e-3), tta_passes=2, ceiling_seconds=2.0, ceiling_min_steps=3,
                 input_seconds=2.0, pretrained=False),
}
SEED_LR = dict(mask=3e-4, age=1e-4, gender=1e-4)     # the plain loop's rates, as a competitor would use them
SPEED_EPOCHS = 2     # the default (joint) learner is timed, not scored: its second epoch is the warm one
SPEED_ROUNDS = 3     # trainings of it, each between two ceiling measurements


def device_name() -> str:
    if torch.cuda.is_available(): return torch.cuda.get_device_name(0).replace(' ', '_')
    return f'cpu{os.cpu_count()}'


def host_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpu_peak_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


# ---------------------------------------------------------------- the plain reference loop

class CropDataset(torch.utils.data.Dataset):
    "What a competitor writes: open the crop, resize, random flip when training, normalise."

    def __init__(self, files, targets, size, mean, std, train):
        self.files, self.targets, self.size, self.train = list(files), list(targets), size, train
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __len__(self): return len(self.files)

    def __getitem__(self, i):
        im = Image.open(self.files[i]).convert('RGB').resize((self.size, self.size), Image.BILINEAR)
        if self.train and np.random.rand() < 0.5: im = im.transpose(Image.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float().div_(255)
        return (x - self.mean) / self.std, self.targets[i]


def _autocast(device):
    return torch.autocast('cuda', dtype=torch.bfloat16) if device == 'cuda' else torch.autocast('cpu', enabled=False)


def plain_loop(df: pd.DataFrame, ts, epochs: int, workers: int) -> dict:
    "timm model, Adam at the seed's learning rate, cross-entropy; per-epoch time, images/s and valid F1."
    torch.manual_seed(ts.seed)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    df = task_targets(df, ts)
    tr, va = df[~df.is_valid], df[df.is_valid]
    mean, std = norm_stats(ts.arch)
    col = TARGET[ts.task]

    def loader(part, train):
        return torch.utils.data.DataLoader(
            CropDataset(part.crop, part[col], ts.size, mean, std, train), batch_size=ts.batch, shuffle=train,
            num_workers=workers, pin_memory=device == 'cuda', drop_last=train, persistent_workers=workers > 0)

    train_dl, valid_dl = loader(tr, True), loader(va, False)
    model = make_model(ts).to(device)
    if device == 'cuda': model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=ts.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    out = {'epoch_s': [], 'images_per_s': [], 'valid_f1': []}
    for _ in range(epochs):
        model.train()
        t0, n = time.perf_counter(), 0
        for x, y in train_dl:
            x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
            with _autocast(device): loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(x)
        if device == 'cuda': torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        model.eval()
        preds = []
        with torch.no_grad(), _autocast(device):
            for x, _ in valid_dl: preds.append(model(x.to(device)).float().argmax(1).cpu())
        y_true = va.age_group if ts.task == 'age' else va[col]        # scored on true groups, as mcls does
        out['epoch_s'].append(round(dt, 2))
        out['images_per_s'].append(round(n / dt, 2))
        out['valid_f1'].append(float(f1_score(y_true, torch.cat(preds).numpy(), average='macro')))
    out['warm_images_per_s'] = float(np.mean(out['images_per_s'][1:] or out['images_per_s']))
    return out


CEILING_CONFIGS = [(p, cl) for p in ('fp32', 'bf16') for cl in (False, True)]


def ceiling(ts, seconds: float, min_steps: int) -> dict:
    """The model-only upper bound: forward + backward + AdamW step on synthetic batches already on the device, in
    each of {fp32, bf16} x {contiguous, channels_last}; the fastest configuration is the ceiling."""
    runs = {describe(p, cl): _ceiling_one(ts, p, cl, seconds, min_steps) for p, cl in CEILING_CONFIGS}
    best = max(runs, key=lambda k: runs[k]['images_per_s'])
    return {'configs': runs, 'best': best, 'images_per_s': runs[best]['images_per_s']}


def _ceiling_one(ts, precision: str, channels_last: bool, seconds: float, min_steps: int) -> dict:
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = make_model(ts, pretrained=False).to(device).to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=ts.lr)
    x = torch.randn(ts.batch, 3, ts.size, ts.size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (ts.batch,), device=device)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == 'bf16'):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3): step()        # warm-up
    if device == 'cuda': torch.cuda.synchronize()
    t0, steps = time.perf_counter(), 0
    while steps < min_steps or time.perf_counter() - t0 < seconds:
        step()
        steps += 1
        if device == 'cuda' and steps % 20 == 0: torch.cuda.synchronize()
    if device == 'cuda': torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {'steps': steps, 'seconds': round(dt, 2), 'images_per_s': steps * ts.batch / dt}


def decode_profile(files: list[str], ts, n: int = 200) -> dict:
    """Seconds per photo to decode a cached crop and resize it to the training size as mcls's loader does
    (`decode_at_size` included), on one core, no augmentation."""
    files, open_crop, squish = files[:n], OpenCrop(ts.size if ts.decode_at_size else None), Squish(ts.size)
    t0 = time.perf_counter()
    for f in files: np.asarray(squish(open_crop(f)))
    return {'photos': len(files), 'seconds_per_photo': (time.perf_counter() - t0) / max(len(files), 1)}


def startup(reps: int = 3) -> dict:
    "Seconds to start `mcls --help`, `mcls config` and `python -m mcls --help` (best of reps), over `import typer`."
    def best(cmd):
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
            times.append(time.perf_counter() - t0)
        return min(times)
    mcls = str(Path(sys.executable).with_name('mcls'))
    out = {'import_typer_s': best([sys.executable, '-c', 'import typer']), 'help_s': best([mcls, '--help']),
           'config_s': best([mcls, 'config']), 'python_m_help_s': best([sys.executable, '-m', 'mcls', '--help'])}
    out.update({f'{k[:-2]}_over_typer': out[k] / out['import_typer_s'] for k in ('help_s', 'config_s',
                                                                                 'python_m_help_s')})
    return out


def input_pipeline(df: pd.DataFrame, ts, seconds: float, workers: int) -> dict:
    "images/s that mcls's training DataLoader delivers (augmentation, collation, batch transforms), no model."
    dls = task_dls(df, ts, workers=workers)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds or n == 0:
        for xb, _ in dls.train:
            n += len(xb)
            if time.perf_counter() - t0 > seconds: break
    return {'images_per_s': n / (time.perf_counter() - t0)}


# ---------------------------------------------------------------- the run

def scores_dict(sc) -> dict:
    return {'f1': sc.f1, 'accuracy': sc.accuracy, 'task_f1': sc.task_f1}


def _setup(data: Path, preset: str, weights: Path | None, out: Path | None, work: Path, seeds: list[int],
           workers: int | None):
    "The preset's settings (every path under a fresh `work`), its DataLoader workers and the report it fills."
    p = PRESETS[preset]
    if work.exists(): shutil.rmtree(work)
    work.mkdir(parents=True)
    ov = {'paths.data': data, 'paths.cache': work / 'crops', 'paths.runs': work / 'runs',
          'paths.models': work / 'models',
          'paths.reports': work / 'reports', 'train.arch': p['arch'], 'train.size': p['size'],
          'train.batch': p['batch'],
          'train.pretrained': str(p['pretrained'] and weights is not None).lower(), 'train.weights': weights or '',
          'predict.tta_passes': p['tta_passes']}
    if workers is not None: ov['train.workers'] = workers
    ov.update({f'{t}.epochs': e for t, e in p['epochs'].items()})
    ov.update({f'{t}.lr': lr for t, lr in p['lr'].items()})
    s = load_settings(overrides={k: str(v) for k, v in ov.items()})
    n_workers = resolve_workers(s.tasks['mask'].workers if workers is None else workers)
    out = out or RESULTS / f'{datetime.now():%Y-%m-%d}-{device_name()}-{preset}.json'
    rep = Report(out, extra=lambda: {'memory': {'host_peak_mb': round(host_peak_mb(), 1),
                                                'gpu_peak_mb': gpu_peak_mb()}},
                 tasks={t: {} for t in TASKS}, preset=preset, device=device_name(), torch=torch.__version__,
                 python=platform.python_version(),
                 date=datetime.now().isoformat(timespec='seconds'), data=str(data),
                 command=' '.join(['python', '-m', 'bench.run', *sys.argv[1:]]),
                 settings={'arch': p['arch'], 'size': p['size'], 'batch': p['batch'], 'epochs': p['epochs'],
                           'plain_epochs': p['plain_epochs'], 'tta_passes': p['tta_passes'], 'seeds': seeds,
                           'lr_mcls': p['lr'], 'lr_plain': SEED_LR,
                           'pretrained': bool(p['pretrained'] and weights), 'workers': n_workers,
                           'precision': describe(resolve_precision(s.tasks['mask'].precision, p['size']),
                                                 s.tasks['mask'].channels_last)})
    return s, n_workers, rep


def _crop(rep: Report, s, data: Path) -> pd.DataFrame:
    "1. Crop every photo, cold then warm; the training photos with crops and folds."
    train_df, eval_df = load_train(data), load_eval(data).assign(split='eval')
    both = pd.concat([train_df.assign(split='train'), eval_df], ignore_index=True)
    for name in ('crop_cold', 'crop_warm'):
        t0 = time.perf_counter()
        _, st = attach_crops(both, s.crop, s.paths.cache, progress=False)
        rep.stage(name, time.perf_counter() - t0, images=st.total, cropped=st.cropped, cached=st.cached,
                  images_per_s=st.total / (time.perf_counter() - t0), fallback_share=st.fallbacks / max(st.cropped, 1))
    table, _ = attach_crops(train_df, s.crop, s.paths.cache, progress=False)
    table['fold'] = assign_folds(table, s.split.folds, s.split.by, s.split.seed)
    return table


def _train_tasks(rep: Report, s, table: pd.DataFrame, seeds: list[int], model_dir: Path):
    "2. Train the three tasks over the seeds; the first seed's learners are exported."
    for task in TASKS:
        runs = []
        for i, seed in enumerate(seeds):
            t0 = time.perf_counter()
            r = train_task(table, with_seed(s, seed), task, 0, export_dir=model_dir if i == 0 else None, progress=False)
            runs.append(r)
            rep.stage(f'train_{task}_seed{seed}', time.perf_counter() - t0, valid_f1=r.valid_f1)
        f1s = [r.valid_f1 for r in runs]
        ep = runs[0].epoch_seconds
        per_epoch = pd.read_csv(runs[0].run_dir / 'history.csv').f1_score.astype(float).tolist()
        rep.data['tasks'][task].update(valid_f1_per_epoch=per_epoch,
            valid_f1=float(np.mean(f1s)), valid_f1_seeds=f1s, valid_f1_spread=float(np.max(f1s) - np.min(f1s)),
            train_images_per_s=runs[0].train_images_per_s, first_epoch_s=ep[0] if ep else None,
            later_epoch_s=float(np.mean(ep[1:])) if len(ep) > 1 else None)
        rep.save()


def _predict(rep: Report, s, data: Path, work: Path, model_dir: Path):
    "3. Predict plain and with TTA, on eval and on a degraded copy of it."
    degraded = work / 'degraded'
    t0 = time.perf_counter()
    degrade_copy(Path(data), degraded)
    rep.stage('degrade_copy', time.perf_counter() - t0)
    for key, root in (('eval', Path(data)), ('eval_degraded', degraded)):
        sd = dataclasses.replace(s, paths=dataclasses.replace(s.paths, data=root))
        rep.data[key] = {}
        for mode in ('plain', 'tta'):
            t0 = time.perf_counter()
            sub = work / f'{key}_{mode}.csv'
            predict_eval(sd, [model_dir], sub, tta=mode == 'tta', progress=False)
            rep.data[key][mode] = scores_dict(evaluate_files(sub, root / 'eval' / 'answers.csv'))
            rep.stage(f'predict_{key}_{mode}', time.perf_counter() - t0)


def _plain(rep: Report, s, fold_df: pd.DataFrame, p: dict, n_workers: int):
    "4. References on the same split, architecture, size, batch and precision: a plain PyTorch loop."
    for task in TASKS:
        t0 = time.perf_counter()
        pl = plain_loop(fold_df, dataclasses.replace(s.tasks[task], lr=SEED_LR[task]), p['plain_epochs'], n_workers)
        rep.data['tasks'][task]['plain'] = pl
        rep.stage(f'plain_{task}', time.perf_counter() - t0)


def _joint_against_ceiling(rep: Report, s, table: pd.DataFrame, p: dict, seed: int):
    """5. The default learner (joint) against the model-only ceiling of its model, in alternating rounds: on this
    shared host the same step's speed drifts by a quarter within minutes (measured), so each training is compared
    with the ceilings taken right before and after it, and the median round is reported."""
    joint = s.tasks['joint']
    t0 = time.perf_counter()
    rep.data['ceiling'] = ceiling(joint, p['ceiling_seconds'], p['ceiling_min_steps'])
    rep.stage('ceiling', time.perf_counter() - t0)
    best_cfg = next(c for c in CEILING_CONFIGS if describe(*c) == rep.data['ceiling']['best'])
    sj = dataclasses.replace(s, tasks={**s.tasks, 'joint': dataclasses.replace(joint, epochs=SPEED_EPOCHS)})
    t0 = time.perf_counter()
    ceils, trains = [rep.data['ceiling']['images_per_s']], []
    for _ in range(SPEED_ROUNDS):
        trains.append(train_task(table, with_seed(sj, seed), 'joint', 0, progress=False).train_images_per_s)
        ceils.append(_ceiling_one(joint, *best_cfg, p['ceiling_seconds'], p['ceiling_min_steps'])['images_per_s'])
    ratios = [t / ((a + b) / 2) for t, a, b in zip(trains, ceils, ceils[1:])]
    mid = int(np.argsort(ratios)[len(ratios) // 2])
    rep.data['joint'] = {'epochs': SPEED_EPOCHS, 'rounds_images_per_s': trains, 'ceilings_images_per_s': ceils,
                         'rounds_over_ceiling': ratios, 'median_round': mid, 'train_images_per_s': trains[mid],
                         'ceiling_images_per_s': (ceils[mid] + ceils[mid + 1]) / 2}
    rep.stage('train_joint', time.perf_counter() - t0)


def _profiles(rep: Report, s, fold_df: pd.DataFrame, p: dict, n_workers: int):
    "6. The input pipeline alone, JPEG decoding, and the start-up of a command."
    joint = s.tasks['joint']
    t0 = time.perf_counter()
    rep.data['input_pipeline'] = input_pipeline(fold_df, joint, p['input_seconds'], n_workers)
    rep.stage('input_pipeline', time.perf_counter() - t0)
    rep.data['decode'] = decode_profile(fold_df.crop.tolist(), joint)
    t0 = time.perf_counter()
    rep.data['startup'] = startup()
    rep.stage('startup', time.perf_counter() - t0)


def _speed_summary(d: dict) -> dict:
    "The speed ratios the benchmark reports, from what the steps measured."
    tasks_ips = float(np.mean([d['tasks'][t]['train_images_per_s'] for t in TASKS]))
    mcls_ips = d['joint']['train_images_per_s']
    plain_ips = float(np.mean([d['tasks'][t]['plain']['warm_images_per_s'] for t in TASKS]))
    ceil_ips = d['joint']['ceiling_images_per_s']
    return {'mcls_images_per_s': mcls_ips, 'tasks_images_per_s': tasks_ips, 'plain_images_per_s': plain_ips,
            'ceiling_images_per_s': ceil_ips, 'tasks_over_ceiling': tasks_ips / ceil_ips,
            'input_images_per_s': d['input_pipeline']['images_per_s'],
            'ceiling_config': d['ceiling']['best'],
            # share of a training step's time per photo that decoding + resizing would take on one
            # core: caching decoded crops at training size pays only above about 0.10
            'decode_share_of_step': d['decode']['seconds_per_photo'] * mcls_ips,
            'mcls_over_ceiling': mcls_ips / ceil_ips, 'tasks_over_plain': tasks_ips / plain_ips,
            # fastai's tta: n augmented passes + 1 plain; the aim is at most passes + 1.5
            'tta_over_plain': d['stages']['predict_eval_tta']['seconds'] / d['stages']['predict_eval_plain']['seconds']}


def run(data: Path, preset: str, weights: Path | None, out: Path | None, work: Path, seeds: list[int],
        workers: int | None) -> dict:
    "The benchmark's steps in order, the report rewritten after each."
    t_all, p, work = time.perf_counter(), PRESETS[preset], Path(work)
    s, n_workers, rep = _setup(data, preset, weights, out, work, seeds, workers)
    table = _crop(rep, s, data)
    fold_df = table.assign(is_valid=table.fold == 0)
    model_dir = Path(s.paths.models) / 'fold0'
    _train_tasks(rep, s, table, seeds, model_dir)
    _predict(rep, s, data, work, model_dir)
    _plain(rep, s, fold_df, p, n_workers)
    _joint_against_ceiling(rep, s, table, p, seeds[0])
    _profiles(rep, s, fold_df, p, n_workers)
    rep.data['speed'] = _speed_summary(rep.data)
    rep.data['wall_s'] = round(time.perf_counter() - t_all, 1)
    rep.save()
    return rep.data


def print_table(r: dict):
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"mcls benchmark: {r['preset']} preset on {r['device']} ({r['settings']['arch']}, "
                    f"{r['settings']['size']} px, batch {r['settings']['batch']}, {r['settings']['precision']})",
              title_justify='left')
    for c in ('measure', 'mask', 'age', 'gender', 'all'): t.add_column(c, justify='right' if c != 'measure' else 'left')
    T = r['tasks']

    def f(v): return '-' if v is None else (f'{v:.3f}' if isinstance(v, float) else str(v))

    t.add_row('valid F1, mcls (mean of seeds)', *[f(T[k]['valid_f1']) for k in TASKS], '')
    t.add_row('valid F1 spread over seeds', *[f(T[k]['valid_f1_spread']) for k in TASKS], '')
    n_plain = r['settings']['plain_epochs']
    t.add_row(f'valid F1, plain loop (epoch {n_plain})', *[f(T[k]['plain']['valid_f1'][-1]) for k in TASKS], '')
    t.add_row(f'valid F1, mcls at epoch {n_plain} (first seed)',
              *[f(T[k]['valid_f1_per_epoch'][n_plain - 1]) if len(T[k]['valid_f1_per_epoch']) >= n_plain else '-'
                for k in TASKS], '')
    for key, label in (('eval', 'eval'), ('eval_degraded', 'degraded eval')):
        for mode in ('plain', 'tta'):
            e = r[key][mode]
            t.add_row(f'{label} F1 {mode}', *[f(e['task_f1'][k]) for k in TASKS],
                      f"{e['f1']:.3f} (acc {e['accuracy']:.3f})")
    t.add_row('train images/s, mcls task learners (warm epochs)', *[f(T[k]['train_images_per_s']) for k in TASKS],
              f(r['speed']['tasks_images_per_s']))
    t.add_row('train images/s, mcls default (joint) learner (warm epoch)', '', '', '',
              f(r['speed']['mcls_images_per_s']))
    t.add_row('train images/s, plain loop', *[f(T[k]['plain']['warm_images_per_s']) for k in TASKS],
              f(r['speed']['plain_images_per_s']))
    for name, c in r['ceiling']['configs'].items():
        t.add_row(f'images/s, model only, {name}', '', '', '', f(c['images_per_s']))
    j = r['joint']
    t.add_row(f"images/s, model-only ceiling ({r['speed']['ceiling_config']}) between the default learner's rounds",
              '', '', '', ' / '.join(f'{c:.1f}' for c in j['ceilings_images_per_s']))
    t.add_row("default learner's rounds: images/s (over the ceilings around it)", '', '', '',
              ', '.join(f'{v:.1f} ({q:.2f})' for v, q in zip(j['rounds_images_per_s'], j['rounds_over_ceiling'])))
    t.add_row('images/s, input pipeline alone', '', '', '', f(r['speed']['input_images_per_s']))
    t.add_row('TTA / plain prediction time', '', '', '', f"{r['speed']['tta_over_plain']:.2f}")
    t.add_row('decode + resize / training time per photo', '', '', '', f"{r['speed']['decode_share_of_step']:.3f}")
    su = r['startup']
    t.add_row('start-up s: mcls --help / config (x import typer)', '', '', '',
              f"{su['help_s']:.2f} / {su['config_s']:.2f} ({su['help_over_typer']:.1f}x / "
              f"{su['config_over_typer']:.1f}x)")
    t.add_row('default learner / ceiling (median round); task learners / ceiling, / plain', '', '', '',
              f"{r['speed']['mcls_over_ceiling']:.2f}; {r['speed']['tasks_over_ceiling']:.2f}, "
              f"{r['speed']['tasks_over_plain']:.2f}")
    t.add_row('first / later epoch s (mcls)',
              *[f"{f(T[k]['first_epoch_s'])} / {f(T[k]['later_epoch_s'])}" for k in TASKS], '')
    for name, st in r['stages'].items():
        if not name.startswith('train_'): t.add_row(f'wall s: {name}', '', '', '', f"{st['seconds']:.1f}")
    t.add_row('wall s: whole run', '', '', '', f"{r['wall_s']:.0f}")
    t.add_row('peak memory MB (host / GPU)', '', '', '',
              f"{r['memory']['host_peak_mb']:.0f} / {f(r['memory']['gpu_peak_mb'])}")
    Console(width=140).print(t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', type=Path, required=True, help='competition layout with eval/answers.csv')
    ap.add_argument('--preset', choices=sorted(PRESETS), default='cpu')
    ap.add_argument('--weights', type=Path, default=WEIGHTS if WEIGHTS.exists() else None)
    ap.add_argument('--out', type=Path, help='result JSON (default bench/results/<date>-<device>-<preset>.json)')
    ap.add_argument('--work', type=Path, default=ROOT / 'runs' / 'bench', help='scratch folder (replaced)')
    ap.add_argument('--seeds', type=int, nargs='+', default=[777])
    ap.add_argument('--workers', type=int,
                    help='DataLoader workers (default: settings; auto = mcls.learner.resolve_workers)')
    a = ap.parse_args(argv)
    if not (a.data / 'eval' / 'answers.csv').exists():
        ap.error(f'{a.data}/eval/answers.csv not found: build the data with ../shared/tools/make_maskfaces.py')
    if a.preset != 'tiny' and a.weights is None:
        ap.error('no ImageNet weights: pass --weights path/to/tf_efficientnet_lite0.in1k.safetensors')
    r = run(a.data, a.preset, a.weights if a.preset != 'tiny' else None, a.out, a.work, a.seeds, a.workers)
    print_table(r)
    print(f"wrote {a.out or 'bench/results/'}")
    return r


if __name__ == '__main__':
    main()
