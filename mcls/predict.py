"""Prediction: per-task probabilities (plain or fastai TTA), fold ensembles, tuned offsets, the 18-class submission."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.vision.all import ProgressCallback

from .atomic import atomic_path, write_csv_atomic
from .crop import attach_crops
from .dataset import DataError, load_eval
from .export import load_task_learner, read_meta
from .labels import encode
from .learner import batch_tfms, item_tfms
from .settings import TASKS, PredictSettings, Settings
from .tune import apply_offsets, read_offsets

__all__ = ['combine', 'check_models', 'task_probs', 'ensemble_probs', 'predict_frame', 'predict_eval']

log = logging.getLogger(__name__)


def combine(mask_probs, gender_probs, age_probs) -> np.ndarray:
    "Per-task probabilities -> the 18-class label mask*6 + gender*3 + age (argmax of each)."
    return encode(np.argmax(mask_probs, 1), np.argmax(gender_probs, 1), np.argmax(age_probs, 1))


def check_models(model_dirs: list[Path]) -> dict[str, list[dict]]:
    "Every folder must hold all three tasks, and all age learners must share one training boundary."
    metas = {t: [read_meta(d, t) for d in model_dirs] for t in TASKS}
    bounds = {m['boundary'] for m in metas['age']}
    if len(bounds) > 1:
        where = ', '.join(f'{d}: {m["boundary"]}' for d, m in zip(model_dirs, metas['age']))
        raise DataError(f'age learners were trained with different age boundaries ({where}); '
                        f'ensemble learners trained with the same [age] boundary')
    return metas


def task_probs(learn, df: pd.DataFrame, meta: dict, ps: PredictSettings, tta: bool) -> np.ndarray:
    "Probabilities of one learner for the `crop` column of `df`; TTA uses the TTA-safe pipeline, complete."
    dl = learn.dls.test_dl(df[['crop']], bs=ps.batch)
    if not sys.stdout.isatty(): learn.remove_cb(ProgressCallback)
    with torch.autocast('cuda', dtype=torch.bfloat16, enabled=torch.cuda.is_available()):
        if tta:
            probs, _ = learn.tta(dl=dl, n=ps.tta_passes, item_tfms=item_tfms(meta['size'], ps.tta_pipeline),
                                 batch_tfms=batch_tfms(meta['arch']))
        else:
            probs, _ = learn.get_preds(dl=dl)
    return probs.float().numpy()


def ensemble_probs(model_dirs: list[Path], task: str, df: pd.DataFrame, ps: PredictSettings, tta: bool,
                   safe: bool = False) -> np.ndarray:
    "Average of the task's probabilities over model folders (e.g. one per fold)."
    out = [task_probs(load_task_learner(d, task, safe), df, read_meta(d, task), ps, tta) for d in model_dirs]
    return np.mean(out, axis=0)


def predict_frame(df: pd.DataFrame, model_dirs: list[Path], ps: PredictSettings, tta: bool, tune: bool = True,
                  safe: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    "Labels and per-task probabilities for the crops of `df`."
    model_dirs = [Path(d) for d in model_dirs]
    check_models(model_dirs)
    probs = {t: ensemble_probs(model_dirs, t, df, ps, tta, safe) for t in TASKS}
    offsets = read_offsets(model_dirs[0]) if tune else {}
    decided = {t: apply_offsets(p, offsets.get(t)) for t, p in probs.items()}
    return combine(decided['mask'], decided['gender'], decided['age']), probs


def predict_eval(s: Settings, model_dirs: list[Path], out: Path, tta: bool, tune: bool = True, safe: bool = False,
                 progress: bool = True) -> pd.DataFrame:
    """Crop the eval photos (through the cache), predict, write `out` (ImageID,ans in info.csv's order) and
    `<out>.probs.npz` with the per-task probabilities. Nothing is written if any step fails."""
    info = load_eval(s.paths.data).assign(split='eval')     # eval photos: unreadable is an error, not a skip
    model_dirs = [Path(d) for d in model_dirs]
    check_models(model_dirs)         # before the slow part
    df, _ = attach_crops(info, s.crop, s.paths.cache, progress=progress)
    labels, probs = predict_frame(df, model_dirs, s.predict, tta, tune, safe)
    sub = pd.DataFrame({'ImageID': df.image_id, 'ans': labels.astype(int)})
    out = Path(out)
    with atomic_path(out.with_name(out.name + '.probs.npz')) as tmp:
        with open(tmp, 'wb') as fh: np.savez(fh, image_ids=sub.ImageID.to_numpy().astype(str), **probs)
    write_csv_atomic(sub, out)
    return sub
