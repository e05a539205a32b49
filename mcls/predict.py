"""Prediction: per-task probabilities (plain or fastai TTA), fold ensembles, tuned offsets, the 18-class submission."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import distributed
from .atomic import output_file
from .crop import attach_crops
from .dataset import DataError, load_eval
from .export import load_task_learner, read_meta
from .modeldirs import check_model_dir, learners_in
from .joint import split_probs
from .labels import encode
from .learner import batch_tfms, item_tfms
from .precision import inference_mode
from .submission import probs_path, write_submission
from .settings import CHOICES, TASKS, PredictSettings, Settings
from .terminal import interactive
from .tune import apply_offsets, read_offsets

__all__ = ['combine', 'check_models', 'view_sizes', 'task_probs', 'learner_for', 'folder_probs', 'ensemble_probs',
           'predict_frame', 'decision_scores', 'person_labels', 'eval_table', 'predict_eval']

log = logging.getLogger(__name__)


def combine(mask_probs, gender_probs, age_probs) -> np.ndarray:
    "Per-task probabilities -> the 18-class label (mcls.labels.encode of each task's argmax)."
    return encode(np.argmax(mask_probs, 1), np.argmax(gender_probs, 1), np.argmax(age_probs, 1))


def check_models(model_dirs: list[Path]) -> dict[Path, dict[str, dict]]:
    "Every folder must hold a joint learner or all three tasks; all age heads must share one training boundary."
    metas = {Path(d): {t: read_meta(d, t) for t in check_model_dir(d)} for d in model_dirs}
    ages = [(d, m.get('joint', m.get('age'))) for d, m in metas.items()]
    if len({m['boundary'] for _, m in ages}) > 1:
        where = ', '.join(f'{d}: {m["boundary"]}' for d, m in ages)
        raise DataError(f'age learners were trained with different age boundaries ({where}); '
                        f'ensemble learners trained with the same [age] boundary')
    return metas


def view_sizes(size: int, scales: tuple[float, ...] | None) -> list[int]:
    "The sizes TTA predicts at: a learner's training `size` times each of `[predict] tta_scales` (None: size alone)."
    return sorted({round(size * s) for s in scales or (1.0,)})


def task_probs(learn, df: pd.DataFrame, meta: dict, ps: PredictSettings, tta: bool) -> np.ndarray:
    """Probabilities of one learner for the `crop` column of `df`; TTA uses the TTA-safe pipeline, complete, at
    every size of `view_sizes`, each resized from the crop as the learner decodes it: the whole cached crop, or with
    `decode_at_size` one decoded for the training size, which a larger view only upscales."""
    dl = learn.dls.test_dl(df[['crop']], bs=ps.batch)
    # a terminal keeps fastai's bars, without the epoch table header its tta() would print; a log gets neither
    with (learn.no_logging() if interactive() else learn.no_bar()), \
            inference_mode(learn.model, meta.get('precision', 'fp32'), meta['size'], meta.get('channels_last', False)):
        if tta:   # fastai: lerp(mean of n augmented passes, plain pass, beta) at each size, then the sizes' mean
            probs = torch.stack([learn.tta(dl=dl, n=ps.tta_passes, item_tfms=item_tfms(size, ps.tta_pipeline),
                                           batch_tfms=batch_tfms(meta['arch']), beta=ps.tta_beta)[0]
                                 for size in view_sizes(meta['size'], ps.tta_scales)]).mean(0)
        else:
            probs, _ = learn.get_preds(dl=dl)
    return probs.float().numpy()


def learner_for(model_dir: Path, task: str, ps: PredictSettings, pickle: bool = False):
    "An exported learner; with engine = onnx its forward pass is onnxruntime's on the folder's `<task>.onnx`."
    learn = load_task_learner(model_dir, task, pickle)
    if ps.engine == 'onnx':
        from .onnx_engine import OnnxModel
        learn.model = OnnxModel(model_dir, task)
    return learn


def folder_probs(model_dir: Path, df: pd.DataFrame, ps: PredictSettings, tta: bool, pickle: bool = False) -> dict:
    "Per-task probabilities of one model folder: one pass of its joint learner, or one per task learner."
    model_dir = Path(model_dir)
    if learners_in(model_dir) == ('joint',):
        probs = split_probs(_finite(task_probs(learner_for(model_dir, 'joint', ps, pickle), df,
                                               read_meta(model_dir, 'joint'), ps, tta), model_dir, 'joint'))
    else:
        probs = {t: _finite(task_probs(learner_for(model_dir, t, ps, pickle), df, read_meta(model_dir, t), ps, tta),
                            model_dir, t) for t in TASKS}
    return probs


def _finite(probs: np.ndarray, model_dir: Path, learner: str) -> np.ndarray:
    "Probabilities a submission may be decided from: a learner whose outputs are not finite is refused, by name."
    if not np.isfinite(probs).all():
        raise DataError(f'{model_dir}: its {learner} learner gives non-finite probabilities (its weights hold NaN or '
                        f'inf: a diverged training): train it again with a lower lr')
    return probs


def ensemble_probs(model_dirs: list[Path], df: pd.DataFrame, ps: PredictSettings, tta: bool,
                   pickle: bool = False) -> dict[str, np.ndarray]:
    "Per-task probabilities averaged over model folders (e.g. one per fold)."
    per_dir = [folder_probs(d, df, ps, tta, pickle) for d in model_dirs]
    return {t: np.mean([p[t] for p in per_dir], axis=0) for t in TASKS}


def predict_frame(df: pd.DataFrame, model_dirs: list[Path], ps: PredictSettings, tta: bool, tune: bool = True,
                  pickle: bool = False) -> tuple[np.ndarray | None, dict[str, np.ndarray] | None]:
    """Labels and per-task probabilities for the crops of `df`. Several ranks: each predicts its share of the rows,
    rank 0 gets them all in order, the others (None, None)."""
    model_dirs = [Path(d) for d in model_dirs]
    check_models(model_dirs)
    mine = df.iloc[distributed.shard(len(df))]
    with distributed.alone():
        part = ensemble_probs(model_dirs, mine, ps, tta, pickle)
    probs = distributed.gather_shards(part)
    if probs is None: return None, None
    decided = decision_scores(probs, model_dirs[0], tune)
    return combine(decided['mask'], decided['gender'], decided['age']), probs


def decision_scores(probs: dict[str, np.ndarray], model_dir: Path, tune: bool) -> dict[str, np.ndarray]:
    "Log-probabilities plus the tuned class offsets of `model_dir` (argmax = decision)."
    offsets = read_offsets(model_dir) if tune else {}
    return {t: apply_offsets(p, offsets.get(t)) for t, p in probs.items()}


def person_labels(s: Settings, df: pd.DataFrame, model_dirs: list[Path], probs: dict,
                  tune: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    "Labels decided per person for [predict] persons_tasks: groups found by face identity (see mcls.persons)."
    from .persons import consistent_labels, group_eval
    groups, _, info = group_eval(s, df.crop.tolist())
    labels, stats = consistent_labels(decision_scores(probs, Path(model_dirs[0]), tune), groups,
                                      s.predict.persons_margin, s.predict.persons_tasks)
    return labels, groups, {**stats, 'threshold': info['threshold']}


def eval_table(s: Settings, model_dirs: list[Path], progress: bool = True) -> pd.DataFrame:
    "The eval photos with their crops (cropped through the cache, once: by rank 0 first), after checking the models."
    info = load_eval(s.paths.data).assign(split='eval')     # eval photos: unreadable is an error, not a skip
    check_models([Path(d) for d in model_dirs])         # before the slow part
    with distributed.main_first():
        df, _ = attach_crops(info, s.crop, s.paths.cache, progress=progress and distributed.is_main())
    return df


def predict_eval(s: Settings, model_dirs: list[Path], out: Path, tta: bool, tune: bool = True, pickle: bool = False,
                 progress: bool = True, persons: str | None = None) -> pd.DataFrame:
    """Crop the eval photos (through the cache), predict, write `out` (ImageID,ans in info.csv's order) and
    `<out>.probs.npz` with the per-task probabilities (and each photo's person group with persons = auto).
    Nothing is written if any step fails. Several ranks share the photos; rank 0 writes and returns the submission,
    the others None."""
    persons = persons or s.predict.persons
    output_file(out, 'the submission')
    output_file(probs_path(out), 'the submission\'s probabilities')
    if persons == 'auto':          # before the slow part: the weights must be there
        from .identity import check_weights
        check_weights(s.predict.identity_weights)
    if persons not in CHOICES['predict.persons']:
        raise DataError(f'persons = {persons!r}: use one of {", ".join(CHOICES["predict.persons"])}')
    model_dirs = [Path(d) for d in model_dirs]
    df = eval_table(s, model_dirs, progress)
    labels, probs = predict_frame(df, model_dirs, s.predict, tta, tune, pickle)
    if labels is None: return None     # another rank than 0: rank 0 writes
    extra = {}
    if persons == 'auto':
        labels, extra['groups'], stats = person_labels(s, df, model_dirs, probs, tune)
        log.info('persons: %s', stats)
    sub = pd.DataFrame({'ImageID': df.image_id, 'ans': labels.astype(int)})
    write_submission(sub, {**probs, **extra}, out)
    return sub
