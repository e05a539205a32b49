"""Exported learners: weights + settings, rebuilt without unpickling (the default way back in), plus fastai's pickle
for notebooks (`load_learner`), opt-in. A model folder is written as a unit: its files always belong together."""
from __future__ import annotations

import json
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from fastai.vision.all import load_learner
from safetensors.torch import load_file, save_file

from .atomic import atomic_dir, recover_dir
from .errors import DataError
from .learner import build_learner, norm_stats, task_datablock
from .modeldirs import check_export_dir
from .settings import Settings, load_settings
from .tune import TUNING_FILE

__all__ = ['export_learner', 'read_meta', 'load_task_learner', 'rebuild_learner']


def export_learner(learn, ts, dest_dir: Path, s: Settings, valid_f1: float | None = None,
                   precision: str = 'fp32', extra: tuple[Path, ...] = ()) -> Path:
    """Write `<task>.safetensors`, `<task>.json`, `<task>.settings.ini`, `<task>.pkl` (learn.export) and the
    `extra` files (e.g. validation probabilities) into `dest_dir` as one unit: a copy of the folder gets the new
    files and replaces it whole, so a kill leaves the old folder or the new one, never a mix."""
    task = ts.task
    check_export_dir(dest_dir, task)
    with atomic_dir(dest_dir) as d:
        # the copy's files are hard links to the old folder's: unlink each before writing it, never write into it;
        # the tuning file was fitted on the learners this export replaces
        for name in (TUNING_FILE, *(f'{task}.{x}' for x in ('pkl', 'safetensors', 'settings.ini', 'json', 'onnx')),
                     *(Path(f).name for f in extra)):
            (d / name).unlink(missing_ok=True)
        learn.export((d / f'{task}.pkl').resolve())
        state = {k: v.detach().cpu().contiguous() for k, v in learn.model.state_dict().items()}
        save_file(state, str(d / f'{task}.safetensors'))
        (d / f'{task}.settings.ini').write_text(s.to_ini())
        meta = {'task': task, 'arch': ts.arch, 'size': ts.size,
                'boundary': ts.boundary if task in ('age', 'joint') else None, 'age_head': ts.age_head,
                'precision': precision, 'channels_last': ts.channels_last, 'pipeline': ts.pipeline,
                'norm': norm_stats(ts.arch), 'valid_f1': valid_f1,
                'created': datetime.now().isoformat(timespec='seconds')}
        (d / f'{task}.json').write_text(json.dumps(meta, indent=1))
        for f in extra: shutil.copy(f, d / Path(f).name)
    return Path(dest_dir)


def read_meta(model_dir: Path, task: str) -> dict:
    p = recover_dir(model_dir) / f'{task}.json'
    if not p.exists():
        raise DataError(f'{model_dir}: no {task} learner ({p.name} missing). Train it with '
                        f'`mcls train {task}` or point --models at a folder that has all three tasks')
    try:
        meta = json.loads(p.read_text())
        meta['arch'], meta['size']      # noqa: B018 - the keys every reader needs
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise DataError(f'{p}: not a valid mcls export ({type(e).__name__}: {e}); export the learner again '
                        f'(`mcls train {task}`)') from None
    return meta


def _bad_export(p: Path, task: str, e: Exception) -> DataError:
    return DataError(f'{p}: cannot be loaded ({type(e).__name__}: {str(e)[:200]}); export the learner again '
                     f'(`mcls train {task}`)')


def rebuild_learner(model_dir: Path, task: str):
    "The default way back in: build the Learner from its settings, then load plain tensors (nothing unpickled)."
    model_dir = Path(model_dir)
    ini = model_dir / f'{task}.settings.ini'
    try:
        s = load_settings(ini, standalone=True)
        ts = s.tasks[task]
    except Exception as e:  # noqa: BLE001 - any unreadable settings file has one fix
        raise _bad_export(ini, task, e) from None
    with tempfile.TemporaryDirectory() as tmp:   # fastai infers types from one item: a blank photo will do
        blank = Path(tmp) / 'blank.png'
        Image.new('RGB', (ts.size, ts.size)).save(blank)
        one = pd.DataFrame({'crop': [str(blank)], 'is_valid': [False], 'mask': [0], 'gender': [0], 'age_target': [0],
                            'joint_y': [0]})
        dls = task_datablock(ts).dataloaders(one, bs=1, num_workers=0).new_empty()
    learn = build_learner(dls, ts, path=model_dir, pretrained=False)
    weights = model_dir / f'{task}.safetensors'
    try:
        learn.model.load_state_dict(load_file(str(weights)))
    except Exception as e:  # noqa: BLE001 - truncated file, another arch, not safetensors: one fix
        raise _bad_export(weights, task, e) from None
    return learn


def _load_pickle(model_dir: Path, task: str, meta: dict):
    "fastai's load_learner (which warns that pickles run code), checked against the folder's weights and metadata."
    from safetensors import safe_open
    p = Path(model_dir) / f'{task}.pkl'
    try:
        learn = load_learner(p, cpu=not torch.cuda.is_available())
        shapes = {k: tuple(v.shape) for k, v in learn.model.state_dict().items()}
    except Exception as e:  # noqa: BLE001 - corrupt, truncated or foreign pickles: one fix
        raise _bad_export(p, task, e) from None
    try:
        with safe_open(str(Path(model_dir) / f'{task}.safetensors'), 'pt') as f:
            ref = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001
        raise _bad_export(Path(model_dir) / f'{task}.safetensors', task, e) from None
    if shapes != ref:   # the metadata (size, normalisation, arch) describes the safetensors, so they must agree
        raise DataError(f'{p}: holds another model than {task}.safetensors / {task}.json ({meta["arch"]}); '
                        f'export the learner again (`mcls train {task}`)')
    return learn


def load_task_learner(model_dir: Path, task: str, pickle: bool = False):
    "An exported learner of `task` (rebuilt from weights; fastai's pickle only with `pickle`), on the GPU if any."
    meta = read_meta(model_dir, task)
    learn = _load_pickle(Path(model_dir), task, meta) if pickle else rebuild_learner(model_dir, task)
    if torch.cuda.is_available(): learn.dls.to('cuda'); learn.model.cuda()
    return learn
