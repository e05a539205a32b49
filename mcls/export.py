"""Exported learners: fastai's pickle for convenience, plus weights + settings to rebuild without unpickling."""
from __future__ import annotations

import json
import tempfile
import warnings
from datetime import datetime
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from fastai.vision.all import load_learner
from safetensors.torch import load_file, save_file

from .atomic import atomic_path, write_text_atomic
from .learner import build_learner, norm_stats, task_datablock
from .persons import PERSONS_FILE
from .settings import Settings, load_settings
from .tune import TUNING_FILE

__all__ = ['export_learner', 'read_meta', 'load_task_learner', 'rebuild_learner']


def export_learner(learn, ts, dest_dir: Path, s: Settings, valid_f1: float | None = None,
                   precision: str = 'fp32') -> Path:
    "Write `<task>.pkl` (learn.export), `<task>.safetensors`, `<task>.json` and `<task>.settings.ini` atomically."
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    for stale in (TUNING_FILE, PERSONS_FILE):   # fitted on the learners this export replaces
        (dest_dir / stale).unlink(missing_ok=True)
    task = ts.task
    with atomic_path(dest_dir / f'{task}.pkl') as tmp: learn.export(tmp.resolve())
    state = {k: v.detach().cpu().contiguous() for k, v in learn.model.state_dict().items()}
    with atomic_path(dest_dir / f'{task}.safetensors') as tmp: save_file(state, str(tmp))
    write_text_atomic(dest_dir / f'{task}.settings.ini', s.to_ini())
    meta = {'task': task, 'arch': ts.arch, 'size': ts.size, 'boundary': ts.boundary if task in ('age', 'joint') else None,
            'age_head': ts.age_head, 'precision': precision, 'channels_last': ts.channels_last,
            'pipeline': ts.pipeline, 'norm': norm_stats(ts.arch), 'valid_f1': valid_f1,
            'created': datetime.now().isoformat(timespec='seconds')}
    write_text_atomic(dest_dir / f'{task}.json', json.dumps(meta, indent=1))
    return dest_dir


def read_meta(model_dir: Path, task: str) -> dict:
    p = Path(model_dir) / f'{task}.json'
    if not p.exists():
        raise FileNotFoundError(f'{model_dir}: no {task} learner ({p.name} missing). Train it with '
                                f'`mcls train {task}` or point --models at a folder that has all three tasks')
    return json.loads(p.read_text())


def rebuild_learner(model_dir: Path, task: str):
    "Safe path for untrusted files: build the Learner from settings, then load plain tensors (no unpickling)."
    model_dir = Path(model_dir)
    s = load_settings(model_dir / f'{task}.settings.ini')
    ts = s.tasks[task]
    with tempfile.TemporaryDirectory() as tmp:   # fastai infers types from one item: a blank photo will do
        blank = Path(tmp) / 'blank.png'
        Image.new('RGB', (ts.size, ts.size)).save(blank)
        one = pd.DataFrame({'crop': [str(blank)], 'is_valid': [False], 'mask': [0], 'gender': [0], 'age_target': [0],
                            'joint_y': [0]})
        dls = task_datablock(ts).dataloaders(one, bs=1, num_workers=0).new_empty()
    learn = build_learner(dls, ts, path=model_dir, pretrained=False)
    learn.model.load_state_dict(load_file(str(model_dir / f'{task}.safetensors')))
    return learn


def load_task_learner(model_dir: Path, task: str, safe: bool = False):
    "An exported learner of `task`, on the GPU when there is one."
    read_meta(model_dir, task)
    if safe: learn = rebuild_learner(model_dir, task)
    else:
        with warnings.catch_warnings():    # fastai warns on every pickle load; --safe is the documented alternative
            warnings.filterwarnings('ignore', message='load_learner` uses Python')
            learn = load_learner(Path(model_dir) / f'{task}.pkl', cpu=not torch.cuda.is_available())
    if torch.cuda.is_available(): learn.dls.to('cuda'); learn.model.cuda()
    return learn
