"""Training one task on one fold (or on all data): run folders, checkpoints, resume, export."""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import time
from contextlib import contextmanager, nullcontext, redirect_stdout
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.vision.all import (Callback, CSVLogger, CutMix, MixUp, ParamScheduler, Recorder,
                               SaveModelCallback, SchedCos, TrackerCallback, combine_scheds, even_mults, set_seed)

from .atomic import atomic_path, folder_lock, remove_stray, storage_errors, write_csv_atomic, write_text_atomic
from . import distributed, threads
from .crop import CENTRE, attach_crops
from .dataset import LoadReport, load_train
from .export import export_learner
from .folds import assign_folds
from .joint import split_probs
from .errors import ConfigError, DataError, UserError
from .learner import build_learner, check_task_settings, epoch_photos, task_dls
from .plots import pyplot, save_figure
from .terminal import bars_for_people, interactive
from .report import write_run_report
from .tracking import tracking_cbs
from .precision import describe, precision_cbs, resolve_precision
from .progressive import ProgressiveResize
from .modeldirs import check_export_dir, export_dir_for
from .ema import EmaWeights, ema_file, read_ema
from .sampling import DrawEpoch
from .runs import data_fingerprint, process_fields, read_run, run_status, update_run
from .settings import TASKS, Settings, load_settings

__all__ = ['seed_run', 'save_atomic', 'BestModelCallback', 'SaveLastCallback', 'ThreadShare', 'UnfreezeAt',
           'TrainResult', 'fine_tune_scheds', 'training_table', 'new_run_dir', 'train_task', 'TrainingFailed',
           'with_seed', 'train_learners', 'resume_task', 'lr_find_task', 'valid_files']

MONITOR = 'f1_score'
log = logging.getLogger(__name__)


def save_atomic(learn, name: str, with_opt: bool) -> Path:
    """learn.save into a temporary file renamed onto `<name>.pth`: a kill mid-write leaves the previous file whole,
    and a failed write (full disk, file-size limit) leaves no temporary and is one WriteError naming the file."""
    dest = Path(learn.path) / learn.model_dir / f'{name}.pth'
    tmp = dest.with_name(f'.{name}.{os.getpid()}.tmp.pth')
    with storage_errors(dest):
        try:
            learn.save(tmp.name[:-len('.pth')], with_opt=with_opt)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    return dest


class BestModelCallback(SaveModelCallback):
    """fastai's SaveModelCallback, writing `best.pth` atomically. With several ranks every rank keeps one (its
    `learn.load` of the best epoch is a barrier of all ranks), and rank 0 alone writes. Its own line ("Better model
    found at epoch 0 with f1_score value: 0.0037037037037037034.") is not printed: the epoch line marks the best."""
    def _save(self, name):
        if distributed.is_main(): self.last_saved_path = save_atomic(self.learn, name, self.with_opt)

    def after_epoch(self):
        with redirect_stdout(io.StringIO()): super().after_epoch()


class SaveLastCallback(Callback):
    """Save weights + optimizer after every epoch as `last-<epoch>.pth`, then point `last_epoch.json` at it, then
    drop older ones: at any moment the JSON names a complete file of the epoch it names, so a kill loses at most
    the current epoch. (fastai's SaveModelCallback(every_epoch=True) keeps one file per epoch; this keeps one.)"""
    order = 63   # after SaveModelCallback (61) and EmaWeights (62): 'best' is decided and the training weights are back

    def __init__(self, run_dir: Path): self.run_dir = Path(run_dir)

    def after_epoch(self):
        name = f'last-{self.epoch}'
        save_atomic(self.learn, name, with_opt=True)
        state = {'epoch': self.epoch, 'file': name}
        best = next((cb for cb in self.learn.cbs if isinstance(cb, SaveModelCallback)), None)
        if best is not None and best.best is not None: state['best'] = float(best.best)
        write_text_atomic(self.run_dir / 'last_epoch.json', json.dumps(state))
        for old in self.run_dir.glob('last-*.pth'):
            if old.stem != name: old.unlink(missing_ok=True)


class ResumeGuard(Callback):
    """fastai's start_epoch still sends `after_epoch` for the skipped epochs (fastai issue #3780), where the
    Recorder, trackers and savers then log empty rows, crash or save over the checkpoint: mute them there."""
    order = 0

    def _muted(self):
        muted = (Recorder, TrackerCallback, SaveLastCallback, EpochPrinter)
        return [cb for cb in self.learn.cbs if isinstance(cb, muted)]

    def before_epoch(self):
        for cb in self._muted(): cb.run = True

    def after_cancel_epoch(self):
        for cb in self._muted(): cb.run = False


class TrainTimer(Callback):
    """Seconds and photos of each epoch's training phase (no validation), for images/s that compare with a bare
    loop: the photos the model was shown (this rank's batches times the ranks), not the photos the table holds."""
    order = 1

    def __init__(self): self.train_seconds, self.train_photos = [], []
    def before_train(self): self._t0, self._photos = time.perf_counter(), 0
    def after_batch(self):
        if self.training: self._photos += len(self.yb[0]) if self.yb else 0

    def after_train(self):
        if torch.cuda.is_available(): torch.cuda.synchronize()
        self.train_seconds.append(time.perf_counter() - self._t0)
        self.train_photos.append(self._photos * distributed.world_size())


class EpochPrinter(Callback):
    """One plain line per epoch (in a terminal under fastai's progress bars, in a log alone), 4 decimals, the best
    epoch so far marked `best` (BestModelCallback's choice, the checkpoint kept)."""
    order = 65       # after the tracker (60) has decided this epoch

    def after_epoch(self):
        names, vals = self.recorder.metric_names[1:-1], self.recorder.log[1:-1]
        best = getattr(getattr(self.learn, 'best_model', None), 'new_best', False)   # fastai: a callback by its name
        figures = '  '.join(f'{n} {v:.4f}' if isinstance(v, float) else f'{n} {v}' for n, v in zip(names, vals)
                            if v is not None)     # --full: no validation, so only what was measured
        side = getattr(self.learn, 'progressive_resize', None)
        side = side and side.size_at(self.epoch)
        print(f'{self.learn.path.name}: epoch {self.epoch}{f" ({side} px)" if side else ""}  {figures}'
              f'{"  best" if best else ""}', flush=True)


class ThreadShare(Callback):
    "threads = auto during a fit: the share is recomputed every `every` seconds, as other jobs start and end."
    order = 2

    def __init__(self, every: float = 5.0): self.every, self._next = every, 0.0

    def before_batch(self):
        now = time.monotonic()
        if now < self._next: return
        self._next = now + self.every
        n, _ = threads.resolve_threads(None)
        if n != torch.get_num_threads(): torch.set_num_threads(n)


class UnfreezeAt(Callback):
    "fit = fine_tune in one fit call: the head alone before epoch `at`, every layer from it (resumes land right)."
    order = 5

    def __init__(self, at: int): self.at = at
    def before_epoch(self): self.learn.unfreeze() if self.epoch >= self.at else self.learn.freeze()


def fine_tune_scheds(learn, epochs: int, freeze_epochs: int, lr: float, lr_mult: float) -> dict:
    """A fine-tune in the manner of fastai's `fine_tune` (head alone, then every layer with discriminative rates), as
    one schedule, so both phases share one history, one best checkpoint and one resume: the head warms up to `lr`;
    then every group runs a one-cycle to its rate, the earliest body group's at lr/lr_mult, the head's at lr, the
    groups between spaced geometrically. Unlike fastai's, the base rate is not halved after unfreezing."""
    n = len(learn.opt.param_groups)
    lrs = np.array(even_mults(lr / lr_mult, lr, n) if n > 1 else [lr])
    p = freeze_epochs / epochs
    pcts = [p, (1 - p) * 0.3, (1 - p) * 0.7]
    return {'lr': combine_scheds(pcts, [SchedCos(np.full(n, lr) / 25, np.full(n, lr)), SchedCos(lrs / 5, lrs),
                                        SchedCos(lrs, lrs / 1e5)]),
            'mom': combine_scheds(pcts, [SchedCos(0.95, 0.85), SchedCos(0.95, 0.85), SchedCos(0.85, 0.95)])}


MIX = {'mixup': partial(MixUp, 0.4), 'cutmix': partial(CutMix, 1.0)}   # alphas: fastai's examples


@dataclass
class TrainResult:
    task: str
    run_dir: Path
    export_dir: Path | None
    valid_f1: float | None
    valid_acc: float | None
    epochs: int
    seconds: float
    images_per_s: float                   # photos trained on per second of the whole fit (training + validation)
    train_images_per_s: float = 0.0       # photos trained on per second of the training phase, after the first epoch
    epoch_seconds: tuple[float, ...] = ()  # training phase of each epoch


def seed_run(seed: int, reproducible: bool):
    """fastai's set_seed, and cuDNN's kernel choice: deterministic with `[train] reproducible`, else its autotuner
    (fastest kernels for the batch shape, last digits that differ between runs). A CPU run is repeatable either way."""
    set_seed(seed, reproducible=reproducible)
    torch.backends.cudnn.deterministic = reproducible
    torch.backends.cudnn.benchmark = not reproducible


def training_table(s: Settings, progress: bool = True, report: LoadReport | None = None) -> pd.DataFrame:
    """Training photos with crops (cropping what the cache lacks) and person-aware folds. Photos that could not
    be read or cropped are left out and listed in `df.attrs['skipped']` as (file, reason)."""
    report = report if report is not None else LoadReport()
    df = load_train(s.paths.data, s.paths.corrections, report=report)
    with distributed.main_first():     # several ranks: rank 0 fills the crop cache, the others then read it
        df, stats = attach_crops(df, s.crop, s.paths.cache, progress=progress and distributed.is_main())
    report.skipped.update(stats.skipped)              # counted in the load summary; named with -v by the crop step
    report.crops, report.crop_fallbacks = len(df), int(df.crop.str.endswith(f'.{CENTRE}.jpg').sum())
    df['fold'] = assign_folds(df, s.split.folds, s.split.by, s.split.seed)
    df.attrs['skipped'] = [(f, why) for f, why in [*report.skipped_files, *stats.skipped_files] if why != 'hidden file']
    return df


def new_run_dir(s: Settings, task: str, tag: str) -> Path:
    d = Path(s.paths.runs) / f'{datetime.now():%Y%m%d-%H%M%S}-{task}-{tag}'
    while d.exists(): d = d.with_name(d.name + 'x')
    d.mkdir(parents=True)
    return d


def _fit_cbs(run_dir: Path, validate: bool, resume_state: dict | None, ts, precision: str):
    """Callbacks for the fit call only, so an exported Learner carries none of them. With several ranks, the ones
    that write (history, checkpoints, TensorBoard) are rank 0's alone."""
    cbs = [*precision_cbs(precision, ts.channels_last), DrawEpoch()]
    if ts.early_sizes: cbs.append(ProgressiveResize(ts.early_sizes))
    if ts.mix != 'none': cbs.append(MIX[ts.mix]())
    if resume_state is not None: cbs.append(ResumeGuard())
    if distributed.world_size() > 1: cbs.append(distributed.DDPTrainer())
    if validate:
        best = BestModelCallback(monitor=MONITOR, comp=np.greater, fname='best', reset_on_fit=resume_state is None)
        if resume_state is not None: best.best = resume_state.get('best', -float('inf'))
        cbs.append(best)
    if ts.ema: cbs.append(EmaWeights(ts.ema, run_dir, None if resume_state is None else resume_state['epoch']))
    if not distributed.is_main(): return cbs
    cbs.append(CSVLogger(fname='history.csv', append=resume_state is not None))
    cbs.append(SaveLastCallback(run_dir))
    return [*cbs, *tracking_cbs(ts.track, run_dir, dataclasses.asdict(ts))]


def _fit(learn, ts, epochs: int, cbs, start_epoch: int = 0):
    if ts.fit == 'fine_tune':
        if learn.opt is None: learn.create_opt()
        scheds = fine_tune_scheds(learn, epochs, ts.freeze_epochs, ts.lr, ts.lr_mult)
        learn.fit(epochs, cbs=[ParamScheduler(scheds), UnfreezeAt(ts.freeze_epochs), *cbs], start_epoch=start_epoch)
    else:
        learn.fit_one_cycle(epochs, ts.lr, cbs=cbs, start_epoch=start_epoch)


@contextmanager
def _recorded_failure(run_dir: Path):
    """A run that raises (or is interrupted) says so in run.json, with the error, instead of 'training' forever.
    Where even that cannot be written (the disk that failed the run is full), the original error still reaches the
    user, and `mcls runs` reads the run as interrupted once its process is gone (see mcls.runs)."""
    try:
        yield
    except BaseException as e:
        if not distributed.is_main(): raise
        status = 'interrupted' if isinstance(e, KeyboardInterrupt) else 'failed'
        try:
            update_run(run_dir, status=status, error=f'{type(e).__name__}: {e}'[:500])
        except Exception:  # noqa: BLE001 - the first error is the one to report
            log.warning('%s: could not record that the run %s', run_dir, status)
        raise


def train_task(table: pd.DataFrame, s: Settings, task: str, fold: int | None = 0, export_dir: Path | None = None,
               run_dir: Path | None = None, resume_state: dict | None = None, workers: int | None = None,
               progress: bool = True) -> TrainResult:
    """Train `task` with fold `fold` held out (None: on all photos for full_epochs), keep the best-F1 epoch,
    export to `export_dir` and record everything in a run folder."""
    ts = s.tasks[task]
    full = fold is None
    check_task_settings(ts, full)
    drawn = epoch_photos(table if full else table[table.fold != fold], ts)
    per_rank = -(-drawn // distributed.world_size())       # fastai's DistributedDL pads the ranks to equal shares
    if per_rank < ts.batch:    # fastai drops the last partial batch: no step would run, and nan would be exported
        ranks = f' per rank ({distributed.world_size()} ranks)' if distributed.world_size() > 1 else ''
        raise ConfigError(f'[{task}] batch = {ts.batch} but an epoch draws only {per_rank} training photos{ranks} '
                          f'(photos_per_person = {ts.photos_per_person}): lower --batch (at most {per_rank}), draw '
                          f'more photos per person, or add photos')
    if export_dir is not None: check_export_dir(Path(export_dir), task)
    locked = export_dir is not None and distributed.is_main()
    with folder_lock(export_dir, 'export folder') if locked else nullcontext(), threads.job():
        return _train_locked(table, s, task, fold, export_dir, run_dir, resume_state, workers,
                             progress and distributed.is_main())


def _train_locked(table, s, task, fold, export_dir, run_dir, resume_state, workers, progress) -> TrainResult:
    run_dir, pseudo = _open_run(table, s, task, fold, run_dir, resume_state, export_dir)
    with _recorded_failure(run_dir):
        fitted = _fit_or_resume(table, s.tasks[task], fold, run_dir, resume_state, workers, progress)
        return _score_and_export(fitted, s, task, export_dir, len(pseudo))


def _open_run(table: pd.DataFrame, s: Settings, task: str, fold: int | None, run_dir: Path | None,
              resume_state: dict | None, export_dir: Path | None) -> tuple[Path, pd.DataFrame]:
    """The run folder: a new one (settings, skipped and pseudo-labelled photos, run.json with the data's fingerprint,
    the export folder and the training process), or a resumed one marked training again by this process. Made by
    rank 0 alone; the other ranks get its name."""
    pseudo = table[table.pseudo] if 'pseudo' in table else table.iloc[:0]
    if not distributed.is_main(): return distributed.broadcast_object(None), pseudo
    run_dir = run_dir or new_run_dir(s, task, 'full' if fold is None else f'fold{fold}')
    distributed.broadcast_object(run_dir)
    distributed.note_run(run_dir)
    if resume_state is not None:
        update_run(run_dir, status='training', error=None, world_size=distributed.world_size(), **process_fields())
        return run_dir, pseudo
    skipped = table.attrs.get('skipped', [])
    if skipped:     # photos that could not be read or converted: named here, counted in the load summary
        write_csv_atomic(pd.DataFrame(skipped, columns=['file', 'reason']), run_dir / 'skipped.csv')
    if len(pseudo):     # transductive: the run says so, and lists what it trained on
        write_csv_atomic(pseudo[['stem', 'mask', 'gender', 'age_group', 'crop']].rename(columns={'stem': 'ImageID'}),
                         run_dir / 'pseudo.csv')
    write_text_atomic(run_dir / 'settings.ini', s.to_ini())
    update_run(run_dir, task=task, fold=fold, status='training', data=str(s.paths.data),
               data_fingerprint=data_fingerprint(table), world_size=distributed.world_size(),
               export=str(export_dir) if export_dir is not None else None, **process_fields())
    return run_dir, pseudo


@dataclass
class _Fitted:
    "What a fit leaves for scoring and export."
    learn: object
    df: pd.DataFrame
    ts: object
    run_dir: Path
    full: bool
    precision: str
    epochs: int
    start: int
    seconds: float
    train_seconds: list
    train_photos: list     # photos each trained epoch showed the model, all ranks
    valid_counts: list     # several ranks: validation photos gathered in each epoch (the fold's size, once each)


def _fit_or_resume(table, ts, fold, run_dir: Path, resume_state: dict | None, workers, progress: bool) -> _Fitted:
    "Build the seeded learner, load the last complete epoch when resuming, and fit the epochs left."
    full = fold is None

    def fresh():     # seeded, so a restarted run is the run a new start would be; ranks draw different augmentations
        seed_run(ts.seed + distributed.rank(), ts.reproducible)
        df = table.assign(is_valid=False if full else (table.fold == fold))
        return df, build_learner(task_dls(df, ts, workers=workers), ts, path=run_dir)

    df, learn = fresh()
    precision = resolve_precision(ts.precision, ts.size)
    threads_used = threads.use_threads(ts.threads)
    if progress:
        print(f'{run_dir.name}: {describe(precision, ts.channels_last)} (precision = {ts.precision}); {threads_used}'
              f'{_ranks_note()}', flush=True)
    start = 0
    if resume_state is not None:
        try:       # fastai's learn.load: weights-only, its own allowlist; the checkpoint is read once
            learn.load(resume_state.get('file', 'last'), with_opt=True)
            if ts.ema: read_ema(run_dir, resume_state['epoch'])    # the average continues only from its own state
            start = resume_state['epoch'] + 1
        except Exception:  # noqa: BLE001 - missing, cut off or unreadable: no usable epoch, so restart
            log.warning('%s: the last saved epoch%s cannot be loaded; restarting the run from its first epoch', run_dir,
                        ' or its weight average' if ts.ema else '')
            if distributed.is_main(): _restart(run_dir)
            resume_state, (df, learn) = None, fresh()
    timer = TrainTimer()
    cbs = [*_fit_cbs(run_dir, not full, resume_state, ts, precision), timer]
    if ts.threads is None: cbs.append(ThreadShare())     # auto: follow the other jobs as they start and end
    quiet = not (progress and interactive())     # a log, not a terminal: no bars
    if progress and distributed.is_main(): cbs.append(EpochPrinter())     # one line per epoch, best marked
    epochs = ts.full_epochs if full else ts.epochs
    t0 = time.perf_counter()
    with learn.no_bar() if quiet else nullcontext(), learn.no_logging():      # EpochPrinter's lines, not fastai's table
        if start < epochs:
            if start: _keep_history(run_dir / 'history.csv', start)
            _fit(learn, ts, epochs, cbs, start_epoch=start)
            if start: _keep_history(run_dir / 'history.csv', epochs)
        elif not full and (run_dir / 'best.pth').exists():    # killed after its last epoch: reload the best one
            learn.load('best', with_opt=False)
        elif ts.ema and ema_file(run_dir, epochs - 1).exists():   # the same, --full: the last epoch's average
            learn.model.load_state_dict(torch.load(ema_file(run_dir, epochs - 1), weights_only=True)['model'])
    ddp = next((cb for cb in cbs if isinstance(cb, distributed.DDPTrainer)), None)
    return _Fitted(learn, df, ts, run_dir, full, precision, epochs, start, time.perf_counter() - t0,
                   timer.train_seconds, timer.train_photos, ddp.valid_counts if ddp else [])


def _ranks_note() -> str:
    n = distributed.world_size()
    return '' if n == 1 else f'; {n} ranks (effective batch = {n} x batch)'


def _score_and_export(f: _Fitted, s: Settings, task: str, export_dir: Path | None, pseudo_rows: int) -> TrainResult:
    """Validation scores and probabilities (not for --full), the export, and run.json marked done: rank 0 alone,
    on the whole fold, holding the best epoch's weights."""
    if not distributed.is_main():
        return TrainResult(task, f.run_dir, None, None, None, f.epochs, f.seconds, 0.0)
    with distributed.alone():
        return _score_and_export_here(f, s, task, export_dir, pseudo_rows)


def _score_and_export_here(f: _Fitted, s: Settings, task: str, export_dir: Path | None,
                           pseudo_rows: int) -> TrainResult:
    learn, ts = f.learn, f.ts
    _check_trained(f, task)
    f1 = acc = None
    scores = {}
    if not f.full:
        with learn.no_bar(), learn.no_logging():      # a score, not a fit to watch
            valid = learn.validate()
            _check_finite(float(valid[0]), 'validation loss', task, ts)
            scores = dict(zip([m.name for m in learn.metrics], map(float, valid[1:])))
            _save_valid_probs(learn, f.df[f.df.is_valid], f.run_dir, task)
        f1, acc = scores['f1_score'], scores.get('accuracy')
    warm = slice(1, None) if len(f.train_seconds) > 1 else slice(None)     # the first epoch warms up
    result = TrainResult(task, f.run_dir, None, f1, acc, f.epochs, f.seconds,
                         sum(f.train_photos) / f.seconds if f.seconds and f.train_photos else 0.0,
                         _rate(f.train_photos[warm], f.train_seconds[warm]), tuple(f.train_seconds))
    if export_dir is not None:
        extra = tuple(f.run_dir / n for n in valid_files(task) if (f.run_dir / n).exists())
        result.export_dir = export_learner(learn, ts, Path(export_dir), s, valid_f1=f1, precision=f.precision,
                                           extra=extra)
    update_run(f.run_dir, status='done', valid_f1=f1, valid_acc=acc, valid_scores=scores,
               precision=describe(f.precision, ts.channels_last), pseudo_rows=pseudo_rows, epochs=f.epochs,
               seconds=f.seconds, images_per_s=result.images_per_s, train_images_per_s=result.train_images_per_s,
               epoch_seconds=result.epoch_seconds, arch=ts.arch, size=ts.size,
               valid_photos=None if f.full else f.valid_counts or None,
               export=str(result.export_dir) if result.export_dir else None)
    try:      # what a person looks at; a run that trained and exported stays done without it
        write_run_report(f.run_dir, s, task)
    except Exception as e:  # noqa: BLE001 - bookkeeping never undoes the work
        log.warning('%s: could not draw the run report (%s: %s)', f.run_dir, type(e).__name__, e)
    return result


def _rate(photos: list, seconds: list) -> float:
    return sum(photos) / sum(seconds) if photos and sum(seconds) > 0 else 0.0


class TrainingFailed(ConfigError):
    "A fit that ran but trained nothing usable: nothing is exported and the run is marked failed."


def _check_finite(value: float, what: str, task: str, ts):
    if not np.isfinite(value):
        raise TrainingFailed(f'[{task}] the training diverged ({what} {value}): nothing exported; lower the peak '
                             f'rate (lr = {ts.lr:g}; `mcls lr-find {task}` suggests one) and train again')


def _check_trained(f: _Fitted, task: str):
    """Before anything is scored or exported: every epoch that ran showed the model photos, and the weights are
    finite (a diverged training leaves NaN in them, and every prediction would be one class)."""
    if any(n == 0 for n in f.train_photos):
        raise TrainingFailed(f'[{task}] an epoch trained on no full batch of {f.ts.batch} photos: nothing exported; '
                             f'lower --batch or draw more photos per person')
    bad = next((n for n, p in f.learn.model.state_dict().items()
                if p.is_floating_point() and not torch.isfinite(p).all()), None)
    if bad is not None: _check_finite(float('nan'), f'non-finite weights in {bad}', task, f.ts)


def with_seed(s: Settings, seed: int) -> Settings:
    "The same settings with every learner's training seed replaced."
    return dataclasses.replace(s, tasks={t: dataclasses.replace(ts, seed=seed) for t, ts in s.tasks.items()})


def train_learners(table: pd.DataFrame, s: Settings, learners: list[str], folds: list[int | None],
                   export_dir: Path | None = None, workers: int | None = None, progress: bool = True,
                   on_result=None) -> list[TrainResult]:
    """Each learner on each fold (None: all photos), exported to `export_dir` or models/fold{k} (models/full);
    `on_result(result)` after each, for progress reports."""
    results = []
    for k in folds:
        dest = export_dir or export_dir_for(s, k)
        for t in learners:
            results.append(train_task(table, s, t, k, export_dir=dest, workers=workers, progress=progress))
            if on_result is not None: on_result(results[-1])
    return results


def _keep_history(path: Path, before_epoch: int):
    "history.csv rows of epochs < before_epoch under one header (CSVLogger's append repeats the header)."
    if not path.exists(): return
    lines = path.read_text().splitlines()
    header, rows = lines[0], [l for l in lines[1:] if l != lines[0] and l.split(',')[0].isdigit()]
    rows = [l for l in rows if int(l.split(',')[0]) < before_epoch]
    write_text_atomic(path, '\n'.join([header, *rows]) + '\n')


def valid_files(task: str) -> list[str]:
    "Validation-probability files a learner leaves: one per scored task (the joint learner's split by head)."
    return [f'{t}.valid.npz' for t in (TASKS if task == 'joint' else (task,))]


def _save_valid_probs(learn, valid_df: pd.DataFrame, run_dir: Path, task: str):
    "Validation probabilities per task (out-of-fold when every fold is trained), for decision tuning and ensembles."
    probs, _ = learn.get_preds(ds_idx=1)
    per_task = split_probs(probs.float().numpy()) if task == 'joint' else {task: probs.float().numpy()}
    for t, p in per_task.items():
        with atomic_path(run_dir / f'{t}.valid.npz') as tmp:
            with open(tmp, 'wb') as fh:
                np.savez(fh, files=valid_df.file.to_numpy().astype(str), probs=p, labels=valid_df.label.to_numpy())


def lr_find_task(table: pd.DataFrame, s: Settings, task: str, fold: int, out_png: Path,
                 workers: int | None = None, num_it: int = 100) -> dict[str, float]:
    "fastai's lr_find on the task's training fold; saves the plot and returns the suggestions."
    from fastai.vision.all import minimum, slide, steep, valley
    ts = s.tasks[task]
    check_task_settings(ts)
    seed_run(ts.seed, ts.reproducible)
    learn = build_learner(task_dls(table.assign(is_valid=table.fold == fold), ts, workers=workers), ts,
                          path=Path(out_png).parent)
    pyplot()     # lr_find draws into the current figure: no display needed
    with bars_for_people(learn):
        try:
            sugg = learn.lr_find(num_it=num_it, suggest_funcs=(minimum, steep, valley, slide), show_plot=True)
        except IndexError:    # fastai's suggestions need more rates than a loss that diverged early leaves
            raise UserError(f'lr-find: the loss diverged after {len(learn.recorder.losses)} of {num_it} rates, too '
                            f'few to suggest one; try again with more --num-it or a smaller batch') from None
    save_figure(pyplot().gcf(), out_png)
    return {k: float(v) for k, v in sugg._asdict().items()}


def _restart(run_dir: Path):
    "Forget a run's epochs (none can be continued from): it starts again from its first epoch, in its own folder."
    for f in ('history.csv', 'last_epoch.json', 'best.pth'): (run_dir / f).unlink(missing_ok=True)
    for f in run_dir.glob('ema-*.pth'): f.unlink()


def resume_task(run_dir: Path, export_dir: Path | None = None, workers: int | None = None,
                progress: bool = True) -> TrainResult:
    """Continue a killed run from its last complete epoch, with the settings it was started with, and export it
    (to `export_dir`, default the folder the run was started with). A run killed before its first epoch ended
    restarts."""
    run_dir = Path(run_dir)
    try:
        meta = read_run(run_dir)
        s = load_settings(run_dir / 'settings.ini', standalone=True)   # the run's own values, never today's
        task, fold = meta['task'], meta['fold']
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f'{run_dir}: not a run folder mcls can resume ({type(e).__name__}: {e}); '
                        f'start a new run without --resume') from None
    if distributed.is_main():     # the other ranks read; rank 0 alone checks and tidies
        if run_status(run_dir) == 'training':
            raise UserError(f'{run_dir}: still training (process {meta.get("pid")}); wait for it, or stop it and '
                            f'resume')
        remove_stray(run_dir)
    try:       # the checkpoint it names is checked where it is loaded (train_task)
        state = json.loads((run_dir / 'last_epoch.json').read_text())
    except (OSError, ValueError):
        state = None
    distributed.barrier()     # every rank has read the state before rank 0 may forget it
    if state is None:
        log.warning('%s: no complete epoch saved; restarting the run from its first epoch', run_dir)
        if distributed.is_main(): _restart(run_dir)
    # where the run was started to export (run.json records it from the start), unless --export-dir says otherwise
    dest = check_export_dir(export_dir or meta.get('export') or export_dir_for(s, fold), task)
    table = training_table(s, progress=progress)
    if meta.get('data_fingerprint') not in (None, data_fingerprint(table)):
        raise DataError(f'{run_dir}: the training photos, their labels or the corrections file changed since this run '
                        f'started, so its folds would change under it; restore them, or start a new run without '
                        f'--resume')
    return train_task(table, s, task, fold, export_dir=dest, run_dir=run_dir, resume_state=state, workers=workers,
                      progress=progress)
