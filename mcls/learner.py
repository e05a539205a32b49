"""Per-task DataBlocks and Learners on timm backbones: targets, pipelines, normalisation, losses, weights."""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import pandas as pd
import timm
import torch
from fastai.vision.all import (CategoryBlock, ColReader, ColSplitter, CrossEntropyLossFlat, DataBlock, F1Score,
                               FocalLossFlat, IntToFloatTensor, Learner, Normalize, OptimWrapper,
                               ToTensor, TransformBlock, accuracy, imagenet_stats, params)
from fastai.vision.learner import create_timm_model

from .augment import AlbumentationsTransform, Squish, build_pipeline
from .decode import CropBlock
from .errors import ConfigError
from .joint import AGE_THRESHOLDS, AGE_YEARS, JointLoss, JointTarget, encode_target, joint_metrics, n_logits
from .labels import TASK_CLASSES, age_group
from .precision import resolve_precision
from .sampling import PersonDL, person_draws
from .settings import TaskSettings, check_value, parse_photos_per_person
from . import threads

__all__ = ['TARGET', 'ConfigError', 'n_out', 'task_targets', 'norm_stats', 'item_tfms', 'batch_tfms', 'task_datablock',
           'task_dls', 'make_loss', 'make_metrics', 'make_model', 'timm_split', 'build_learner', 'check_task_settings',
           'resolve_workers', 'sample_weights', 'person_draw', 'epoch_photos']

log = logging.getLogger(__name__)
TARGET = {'mask': 'mask', 'gender': 'gender', 'age': 'age_target',
          'joint': 'joint_y'}   # the column each learner learns


def n_out(ts: TaskSettings) -> int:
    return n_logits(ts.age_head) if ts.task == 'joint' else TASK_CLASSES[ts.task]


def task_targets(df: pd.DataFrame, ts: TaskSettings) -> pd.DataFrame:
    """Add the target column of this task. Age: training rows use the task's boundary, validation rows
    (`is_valid`) the true groups, so validation F1 stays comparable across boundaries."""
    if ts.task not in ('age', 'joint'): return df
    train_groups = age_group(df.age.to_numpy(), ts.boundary)
    valid = df.is_valid.to_numpy(bool) if 'is_valid' in df else np.zeros(len(df), bool)
    df = df.assign(age_target=np.where(valid, df.age_group.to_numpy(), train_groups))
    if ts.task == 'joint':
        person = pd.factorize(df.person)[0] if ts.consistency else None    # the consistency term groups by person
        df['joint_y'] = encode_target(df['mask'], df.gender, df.age_target, df.age, person)
    return df


def norm_stats(arch: str) -> tuple[tuple, tuple]:
    "The backbone's own normalisation (timm's pretrained config), used whether or not weights are pretrained."
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except Exception:  # noqa: BLE001 - unknown tags fall back below
        cfg = None
    if cfg is None or cfg.mean is None: return tuple(imagenet_stats[0]), tuple(imagenet_stats[1])
    return tuple(cfg.mean), tuple(cfg.std)


def item_tfms(size: int, pipeline: str | None):
    "Complete item pipeline (fastai's tta replaces the loader's whole, so it must be complete)."
    return [Squish(size), *([AlbumentationsTransform(pipeline)] if pipeline else []), ToTensor()]


def batch_tfms(arch: str):
    return [IntToFloatTensor(), Normalize.from_stats(*norm_stats(arch))]


def task_datablock(ts: TaskSettings, pipeline: str | None = 'train') -> DataBlock:
    """Cached crops (decoded at the training size with `decode_at_size`) -> CategoryBlock of the task's target
    (joint: one encoded integer); `is_valid` column splits (person-aware)."""
    y_block = (TransformBlock(type_tfms=JointTarget()) if ts.task == 'joint' else
               CategoryBlock(vocab=list(range(TASK_CLASSES[ts.task]))))
    return DataBlock(blocks=(CropBlock(ts.size if ts.decode_at_size else None), y_block),
                     get_x=ColReader('crop'), get_y=ColReader(TARGET[ts.task]), splitter=ColSplitter('is_valid'),
                     item_tfms=item_tfms(ts.size, ts.pipeline if pipeline == 'train' else pipeline),
                     batch_tfms=batch_tfms(ts.arch))


def resolve_workers(workers: int | None, cores: int | None = None) -> int:
    """None (settings: auto): one DataLoader worker per usable core of this rank's share (threads.rank_cores), up
    to 16; none at 2 cores or fewer, where worker processes compete with the model's threads
    (bench/studies/workers.py: 1.12x faster without them on 2 cores)."""
    if workers is not None: return workers
    cores = cores or threads.rank_cores()
    return 0 if cores <= 2 else min(cores, 16)


def task_dls(df: pd.DataFrame, ts: TaskSettings, workers: int | None = None, device=None):
    "DataLoaders of one task from an image table with `crop`, `is_valid` and the task's label columns."
    df = task_targets(df, ts).reset_index(drop=True)
    n = resolve_workers(ts.workers if workers is None else workers)
    kw = dict(bs=ts.batch, num_workers=n, device=device, pin_memory=torch.cuda.is_available(), persistent_workers=n > 0)
    # workers augment with OpenCV: without its own thread pool each (as torch gives each one thread), set before
    # they fork (setting it inside a forked worker can deadlock on the pool the parent started)
    if n: cv2.setNumThreads(0)
    dblock = task_datablock(ts)
    draw = person_draw(df[~df.is_valid.astype(bool)], ts)
    if draw is not None: return dblock.dataloaders(df, dl_type=PersonDL, dl_kwargs=[draw, {}], **kw)
    if ts.old_weight == 1: return dblock.dataloaders(df, **kw)
    return dblock.weighted_dataloaders(df, sample_weights(df, ts.old_weight), **kw)


def person_draw(train: pd.DataFrame, ts: TaskSettings) -> dict | None:
    "PersonDL's arguments for person-balanced epochs (60+ persons drawn round(old_weight) times), None for `all`."
    k = parse_photos_per_person(ts.photos_per_person)
    if k is None: return None
    repeats = np.where(train.age_group.to_numpy() == 2, max(1, round(ts.old_weight)), 1)
    return dict(persons=train.person.to_numpy(), states=train['mask'].to_numpy(), k=k, seed=ts.seed, repeats=repeats,
                together=ts.consistency > 0)


def epoch_photos(train: pd.DataFrame, ts: TaskSettings) -> int:
    "Photos one training epoch draws from the training rows `train` (all ranks together): what the loader draws."
    draw = person_draw(train, ts)
    if draw is None: return len(train)          # plain or weighted (fastai's WeightedDL draws as many as it has)
    return len(person_draws(draw['persons'], draw['states'], draw['k'], np.random.default_rng(0), draw['repeats'],
                            draw['together']))


def sample_weights(df: pd.DataFrame, old_weight: float) -> np.ndarray:
    "Sampling weight per photo: `old_weight` for the 60+ group (true ages), 1 for the rest."
    return np.where(df.age_group.to_numpy() == 2, old_weight, 1.0)


def make_loss(ts: TaskSettings):
    """Cross-entropy (optional label smoothing) or fastai's FocalLossFlat; optional per-class weights.
    Joint: one loss over the three heads (age: groups or ordinal thresholds)."""
    w = torch.tensor(ts.class_weights, dtype=torch.float) if ts.class_weights else None
    if ts.task == 'joint':
        return JointLoss(ts.task_weights or (1.0, 1.0, 1.0), ts.age_head, ts.loss, ts.gamma, ts.label_smoothing,
                         age_weights=w, boundary=ts.boundary, consistency=ts.consistency,
                         consistency_target=ts.consistency_target)
    if ts.loss == 'focal': return FocalLossFlat(gamma=ts.gamma, weight=w)
    return CrossEntropyLossFlat(weight=w, label_smoothing=ts.label_smoothing)


def make_metrics(ts: TaskSettings, loss) -> list:
    "Macro F1 (named f1_score: the checkpoint monitor) and accuracy; joint: 18-class and per-task macro F1."
    return joint_metrics(loss) if ts.task == 'joint' else [F1Score(average='macro'), accuracy]


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get('HF_HUB_OFFLINE', '0').lower() in ('1', 'true', 'yes'): return False
    url = urlparse(os.environ.get('HF_ENDPOINT', 'https://huggingface.co'))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_cached(arch: str) -> bool:
    from huggingface_hub import try_to_load_from_cache
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or not cfg.hf_hub_id: return False
    return any(isinstance(try_to_load_from_cache(cfg.hf_hub_id, f), str)
               for f in ('model.safetensors', 'pytorch_model.bin', 'open_clip_pytorch_model.bin'))


def check_task_settings(ts: TaskSettings, full: bool = False):
    """Fail before training starts, with the setting's name and the fix (`full`: training on all photos). Single
    values were checked against mcls.settings.CHOICES / LIMITS when the settings were read; these need more."""
    t = f'[{ts.task}]'
    for f in dataclasses.fields(ts):      # what the settings loader checked, for settings built in code
        try:
            check_value(ts.task, f.name, getattr(ts, f.name))
        except ValueError as e:
            raise ConfigError(f'{t} {f.name} = {getattr(ts, f.name)!r}: {e}') from None
    resolve_precision(ts.precision, ts.size)       # fp16 on a machine without a CUDA GPU: one line, before any work
    if not timm.is_model(ts.arch):
        close = timm.list_models(f'*{ts.arch.split("_")[0]}*')[:5]
        raise ConfigError(f'{t} arch = {ts.arch!r} is not a timm model (similar: {close})')
    try:
        build_pipeline(ts.pipeline)
    except ValueError as e:
        raise ConfigError(f'{t} pipeline: {e}') from None
    if ts.loss == 'focal' and ts.label_smoothing and ts.task != 'joint':
        raise ConfigError(f'{t} label_smoothing = {ts.label_smoothing} is ignored by fastai\'s focal loss: '
                          f'set loss = ce, or label_smoothing = 0 (the joint learner supports both together)')
    epochs, name = (ts.full_epochs, 'full_epochs') if full else (ts.epochs, 'epochs')
    if ts.fit == 'fine_tune' and not 0 < ts.freeze_epochs < epochs:
        raise ConfigError(f'{t} fit = fine_tune needs 0 < freeze_epochs ({ts.freeze_epochs}) < {name} ({epochs})')
    if ts.early_sizes and (len(ts.early_sizes) >= epochs or max(ts.early_sizes) > ts.size):
        raise ConfigError(f'{t} early_sizes = {",".join(map(str, ts.early_sizes))}: give fewer sizes than {name} '
                          f'({epochs}), each at most size ({ts.size}), so the last epochs train at the size the '
                          f'learner validates and predicts at')
    if ts.consistency and (ts.task != 'joint' or (parse_photos_per_person(ts.photos_per_person) or 1) < 2
                           or ts.mix != 'none'):
        raise ConfigError(f'{t} consistency = {ts.consistency} needs the joint learner, photos_per_person = 2-7 (a '
                          f'person\'s photos drawn together) and mix = none')
    ignored = [k for k, on in (('class_weights', ts.class_weights), ('label_smoothing', ts.label_smoothing),
                               ('loss = focal', ts.loss == 'focal')) if on]
    if ts.task == 'joint' and ts.age_head != 'groups' and ignored:
        log.warning('%s age_head = %s learns years, not groups: %s apply to the groups head only and are not used for '
                    'age', t, ts.age_head, ', '.join(ignored))
    if ts.age_head != 'groups' and ts.task != 'joint':
        raise ConfigError(f'{t} age_head = {ts.age_head} needs the joint learner (`mcls train joint`)')
    if ts.task == 'joint' and ts.age_head == 'ordinal' and ts.boundary not in AGE_THRESHOLDS:
        raise ConfigError(f'{t} boundary = {ts.boundary}: the ordinal head has thresholds at even ages '
                          f'{AGE_THRESHOLDS[0]}-{AGE_THRESHOLDS[-1]}; pick one of them')
    if ts.task == 'joint' and ts.age_head == 'dist' and not 30 < ts.boundary <= AGE_YEARS[-1]:
        raise ConfigError(f'{t} boundary = {ts.boundary}: the dist head has years {AGE_YEARS[0]}-{AGE_YEARS[-1]}; '
                          f'pick a boundary from 31 to {AGE_YEARS[-1]}')
    if ts.task == 'joint' and ts.task_weights and len(ts.task_weights) != 3:
        raise ConfigError(f'{t} task_weights needs 3 values (mask, gender, age), got {len(ts.task_weights)}')
    n_cls = TASK_CLASSES['age' if ts.task == 'joint' else ts.task]     # the joint learner's weights are its age head's
    if ts.class_weights and len(ts.class_weights) != n_cls:
        raise ConfigError(f'{t} class_weights needs {n_cls} values, got {len(ts.class_weights)}')
    if ts.weights is not None and not ts.weights.is_file():
        raise ConfigError(f'{t} weights = {ts.weights}: file not found. Give an existing .safetensors/.pth file '
                          f'(--weights) or use --no-pretrained')
    if ts.pretrained and ts.weights is not None:
        _check_weights(ts.arch, ts.weights.resolve(), ts.weights.stat().st_mtime, ts.partial_weights)
    if ts.pretrained and ts.weights is None and not _hub_cached(ts.arch) and not _hub_reachable():
        raise ConfigError(f'{t} ImageNet weights for {ts.arch} are not cached and the hub cannot be reached: '
                          f'pass --weights path/to/{ts.arch}.safetensors, or --no-pretrained to start from scratch')


@functools.lru_cache(maxsize=8)
def _check_weights(arch: str, weights: Path, mtime: float, partial: bool = False):
    """Local weights must fill every tensor of `arch`'s backbone by name and shape (BatchNorm's step counters
    aside): timm loads non-strictly, so a file of another model would leave layers random without a word.
    `partial` (setting partial_weights) accepts a file that fills some of them, e.g. a backbone of another width."""
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        sd, own = timm.models.load_state_dict(str(weights)), model.state_dict()
        own = {k: v for k, v in own.items() if not k.endswith('num_batches_tracked')}
        hit = sum(k in sd and tuple(sd[k].shape) == tuple(v.shape) for k, v in own.items())
    except Exception as e:  # noqa: BLE001 - unreadable or not weights: one fix
        why = f'{type(e).__name__}: {str(e).splitlines()[0][:160]}'
        raise ConfigError(f'weights = {weights}: not ImageNet weights for {arch} (timm cannot read it: {why}); give '
                          f'the file made for {arch} (--weights)') from None
    if hit == 0 or (hit < len(own) and not partial):
        raise ConfigError(f'weights = {weights}: not ImageNet weights for {arch}: only {hit} of its {len(own)} tensors '
                          f'fit by name and shape; give the file made for {arch} (--weights), set arch to the model it '
                          f'holds, or set partial_weights = true to load the {hit} that fit')


def make_model(ts: TaskSettings, pretrained: bool | None = None):
    "fastai body + head on a timm backbone; local weights go to timm as pretrained_cfg_overlay(file=...)."
    pretrained = ts.pretrained if pretrained is None else pretrained
    if pretrained and ts.weights and ts.partial_weights:
        model, _ = create_timm_model(ts.arch, n_out(ts), pretrained=False)
        body, sd = model[0].model, timm.models.load_state_dict(str(ts.weights))
        own = body.state_dict()
        fit = {k: v for k, v in sd.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        body.load_state_dict(fit, strict=False)     # timm's own loading is strict: load what fits, say how much
        log.warning('%s: partial_weights: %d of %d backbone tensors loaded', ts.weights,
                                            len(fit), len(own))
        return model
    kwargs = {'pretrained_cfg_overlay': dict(file=str(ts.weights))} if pretrained and ts.weights else {}
    model, _ = create_timm_model(ts.arch, n_out(ts), pretrained=pretrained, **kwargs)
    return model


def timm_split(m, n_body: int = 3):
    """Parameter groups: the timm body in `n_body` contiguous groups (stem to head, stages kept whole), then
    fastai's head. With only body/head, fastai's discriminative rates give the whole body one low rate."""
    body = m[0].model
    mods = [c for top in body.children() for c in (top.children() if isinstance(top, torch.nn.Sequential) else [top])]
    mods = [c for c in mods if any(True for _ in c.parameters())]
    groups = [g for g in np.array_split(np.arange(len(mods)), min(n_body, len(mods))) if len(g)]
    return [[p for i in g for p in mods[i].parameters()] for g in groups] + [params(m[1:])]


def adamw(params, **kwargs):
    """PyTorch's fused/foreach AdamW behind fastai's OptimWrapper: same maths as fastai's Adam with true weight
    decay, fewer Python-level ops per step (fastai's own optimizer loops over parameters in Python)."""
    return OptimWrapper(params, torch.optim.AdamW, **kwargs)


def build_learner(dls, ts: TaskSettings, path: Path | str = '.', pretrained: bool | None = None) -> Learner:
    """What `vision_learner` does for a timm name (fastai's body and head, timm's pretrained weights, local ones
    through pretrained_cfg_overlay), with mcls's parameter groups (timm_split), torch's AdamW, the task's loss,
    macro F1 and accuracy."""
    pretrained = ts.pretrained if pretrained is None else pretrained
    loss = make_loss(ts)
    learn = Learner(dls, make_model(ts, pretrained), loss_func=loss, opt_func=adamw, splitter=timm_split,
                    wd=ts.wd, metrics=make_metrics(ts, loss), path=path, model_dir='.')
    return learn
