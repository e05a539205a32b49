"""Error analysis of a task's learner on its validation fold: fastai's ClassificationInterpretation as PNGs
(for a joint learner: the task's head, its confusion matrix and its top losses)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from fastai.vision.all import ClassificationInterpretation
from sklearn.metrics import confusion_matrix

from .evaluate import plot_confusion
from .export import load_task_learner
from .modeldirs import learners_in
from .joint import split_probs
from .labels import N_CLASSES, VALUE_NAMES, task_labels
from .learner import task_dls
from .plots import pyplot, save_figure
from .settings import load_settings
from .suspects import contact_sheet
from .terminal import bars_for_people

__all__ = ['interpret_task']


def _interpret_joint_head(table: pd.DataFrame, task: str, model_dir: Path, fold: int, out_dir: Path, k: int,
                          workers: int | None, pickle: bool) -> list[Path]:
    "A joint learner's `task` head on its validation fold: confusion matrix and the photos it got most wrong."
    ts = load_settings(Path(model_dir) / 'joint.settings.ini', standalone=True).tasks['joint']
    learn = load_task_learner(model_dir, 'joint', pickle)
    learn.dls = task_dls(table.assign(is_valid=table.fold == fold), ts, workers=workers)
    with bars_for_people(learn): probs, targs = learn.get_preds(ds_idx=1)
    p = split_probs(probs.float().numpy())[task]
    y = task_labels(targs.long() % N_CLASSES, task).numpy()
    names = VALUE_NAMES[task]
    stem = Path(out_dir) / f'{task}_fold{fold}'
    written = [plot_confusion(confusion_matrix(y, p.argmax(1), labels=range(len(names))),
                              f'{stem}_confusion.png', list(names), f'joint learner, {task} head, fold {fold}')]
    valid = table[table.fold == fold].reset_index(drop=True)
    loss = -np.log(np.clip(p[np.arange(len(y)), y], 1e-9, 1))
    worst = pd.DataFrame({'key': valid.folder + '/' + valid.stem, 'given': [names[i] for i in y],
                          'suggested': [names[i] for i in p.argmax(1)], 'score': loss, 'crop': valid.crop})
    written.append(contact_sheet(worst.sort_values('score', ascending=False), f'{stem}_top_losses.png', k, cols=3))
    return written


def interpret_task(table: pd.DataFrame, task: str, model_dir: Path, fold: int, out_dir: Path, k: int = 9,
                   workers: int | None = None, pickle: bool = False) -> list[Path]:
    """Confusion matrix and top-losses grid of the learner in `model_dir` on fold `fold` of `table`
    (which must be the fold the learner did not train on). `pickle`: load fastai's pickle, not the weights."""
    if learners_in(model_dir) == ('joint',):
        return _interpret_joint_head(table, task, model_dir, fold, out_dir, k, workers, pickle)
    ts = load_settings(Path(model_dir) / f'{task}.settings.ini',
                       standalone=True).tasks[task]   # the settings it was trained with
    learn = load_task_learner(model_dir, task, pickle)
    learn.dls = task_dls(table.assign(is_valid=table.fold == fold), ts, workers=workers)
    with bars_for_people(learn): interp = ClassificationInterpretation.from_learner(learn)
    out_dir = Path(out_dir)
    written = []
    for name, draw, kwargs in (('confusion', interp.plot_confusion_matrix, {}),
                               ('top_losses', interp.plot_top_losses, {'k': k, 'nrows': 3})):
        draw(**kwargs)
        written.append(save_figure(pyplot().gcf(), out_dir / f'{task}_fold{fold}_{name}.png'))
    return written
