"""Per-task DataBlocks and Learners on timm backbones: targets, pipelines, normalisation, losses, weights."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import timm
import torch
from fastai.vision.all import (CategoryBlock, ColReader, ColSplitter, CrossEntropyLossFlat, DataBlock, F1Score,
                               FocalLossFlat, ImageBlock, IntToFloatTensor, Learner, Normalize, OptimWrapper, Resize, ToTensor,
                               accuracy, default_split, imagenet_stats)
from fastai.vision.learner import create_timm_model

from .augment import AlbumentationsTransform, build_pipeline
from .labels import age_group
from .settings import TaskSettings

__all__ = ['N_OUT', 'TARGET', 'ConfigError', 'task_targets', 'norm_stats', 'item_tfms', 'batch_tfms', 'task_datablock',
           'task_dls', 'make_loss', 'make_model', 'build_learner', 'check_task_settings', 'resolve_workers']

N_OUT = {'mask': 3, 'gender': 2, 'age': 3}
TARGET = {'mask': 'mask', 'gender': 'gender', 'age': 'age_target'}   # the column each task learns


class ConfigError(ValueError):
    "Settings that would fail later in training; raised before any work starts."


def task_targets(df: pd.DataFrame, ts: TaskSettings) -> pd.DataFrame:
    """Add the target column of this task. Age: training rows use the task's boundary, validation rows
    (`is_valid`) the true groups, so validation F1 stays comparable across boundaries."""
    if ts.task != 'age': return df
    train_groups = age_group(df.age.to_numpy(), ts.boundary)
    valid = df.is_valid.to_numpy(bool) if 'is_valid' in df else np.zeros(len(df), bool)
    return df.assign(age_target=np.where(valid, df.age_group.to_numpy(), train_groups))


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
    return [Resize(size, method='squish'), *([AlbumentationsTransform(pipeline)] if pipeline else []), ToTensor()]


def batch_tfms(arch: str):
    return [IntToFloatTensor(), Normalize.from_stats(*norm_stats(arch))]


def task_datablock(ts: TaskSettings, pipeline: str | None = 'train') -> DataBlock:
    "ImageBlock over cached crops -> CategoryBlock of the task's target; `is_valid` column splits (person-aware)."
    return DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=list(range(N_OUT[ts.task])))),
                     get_x=ColReader('crop'), get_y=ColReader(TARGET[ts.task]), splitter=ColSplitter('is_valid'),
                     item_tfms=item_tfms(ts.size, ts.pipeline if pipeline == 'train' else pipeline),
                     batch_tfms=batch_tfms(ts.arch))


def resolve_workers(workers: int | None) -> int:
    "None (settings: auto): one DataLoader worker per usable core, up to 16."
    return min(len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1, 16) \
        if workers is None else workers


def task_dls(df: pd.DataFrame, ts: TaskSettings, workers: int | None = None, device=None):
    "DataLoaders of one task from an image table with `crop`, `is_valid` and the task's label columns."
    df = task_targets(df, ts).reset_index(drop=True)
    n = resolve_workers(ts.workers if workers is None else workers)
    return task_datablock(ts).dataloaders(df, bs=ts.batch, num_workers=n, device=device,
                                          pin_memory=torch.cuda.is_available(), persistent_workers=n > 0)


def make_loss(ts: TaskSettings):
    "Cross-entropy (optional label smoothing) or fastai's FocalLossFlat; optional per-class weights."
    w = torch.tensor(ts.class_weights, dtype=torch.float) if ts.class_weights else None
    if ts.loss == 'focal': return FocalLossFlat(gamma=ts.gamma, weight=w)
    return CrossEntropyLossFlat(weight=w, label_smoothing=ts.label_smoothing)


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


def check_task_settings(ts: TaskSettings):
    "Fail before training starts, with the setting's name and the fix."
    t = f'[{ts.task}]'
    if not timm.is_model(ts.arch):
        close = timm.list_models(f'*{ts.arch.split("_")[0]}*')[:5]
        raise ConfigError(f'{t} arch = {ts.arch!r} is not a timm model (similar: {close})')
    try:
        build_pipeline(ts.pipeline)
    except ValueError as e:
        raise ConfigError(f'{t} pipeline: {e}') from None
    if ts.lr <= 0: raise ConfigError(f'{t} lr = {ts.lr}: must be > 0 (the seed used 1e-4 to 3e-4)')
    if ts.epochs < 1 or ts.full_epochs < 1: raise ConfigError(f'{t} epochs and full_epochs must be >= 1')
    if ts.batch < 1 or ts.size < 16: raise ConfigError(f'{t} batch must be >= 1 and size >= 16')
    if ts.loss not in ('ce', 'focal'): raise ConfigError(f'{t} loss = {ts.loss!r}: use ce or focal')
    if ts.fit not in ('one_cycle', 'fine_tune'): raise ConfigError(f'{t} fit = {ts.fit!r}: use one_cycle or fine_tune')
    if ts.class_weights and len(ts.class_weights) != N_OUT[ts.task]:
        raise ConfigError(f'{t} class_weights needs {N_OUT[ts.task]} values, got {len(ts.class_weights)}')
    if ts.weights is not None and not ts.weights.is_file():
        raise ConfigError(f'{t} weights = {ts.weights}: file not found. Give an existing .safetensors/.pth file '
                          f'(--weights) or use --no-pretrained')
    if ts.pretrained and ts.weights is None and not _hub_cached(ts.arch) and not _hub_reachable():
        raise ConfigError(f'{t} ImageNet weights for {ts.arch} are not cached and the hub cannot be reached: '
                          f'pass --weights path/to/{ts.arch}.safetensors, or --no-pretrained to start from scratch')


def make_model(ts: TaskSettings, pretrained: bool | None = None):
    "fastai body + head on a timm backbone; local weights go to timm as pretrained_cfg_overlay(file=...)."
    pretrained = ts.pretrained if pretrained is None else pretrained
    kwargs = {'pretrained_cfg_overlay': dict(file=str(ts.weights))} if pretrained and ts.weights else {}
    model, _ = create_timm_model(ts.arch, N_OUT[ts.task], pretrained=pretrained, **kwargs)
    return model


def adamw(params, **kwargs):
    """PyTorch's fused/foreach AdamW behind fastai's OptimWrapper: same maths as fastai's Adam with true weight
    decay, fewer Python-level ops per step (fastai's own optimizer loops over parameters in Python)."""
    return OptimWrapper(params, torch.optim.AdamW, **kwargs)


def build_learner(dls, ts: TaskSettings, path: Path | str = '.', pretrained: bool | None = None) -> Learner:
    """What `vision_learner` does for a timm name (its `weights` argument is ignored for timm, and it cannot
    pass pretrained_cfg_overlay), with the task's loss, macro F1 and accuracy."""
    pretrained = ts.pretrained if pretrained is None else pretrained
    learn = Learner(dls, make_model(ts, pretrained), loss_func=make_loss(ts), opt_func=adamw, splitter=default_split,
                    wd=ts.wd, metrics=[F1Score(average='macro'), accuracy], path=path, model_dir='.')
    if pretrained and ts.fit == 'fine_tune': learn.freeze()
    return learn
