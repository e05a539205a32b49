"""Error analysis of a task's learner on its validation fold: fastai's ClassificationInterpretation as PNGs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from fastai.vision.all import ClassificationInterpretation

from .export import load_task_learner
from .learner import task_dls
from .plots import pyplot, save_figure
from .settings import load_settings

__all__ = ['interpret_task']


def interpret_task(table: pd.DataFrame, task: str, model_dir: Path, fold: int, out_dir: Path, k: int = 9,
                   workers: int | None = None) -> list[Path]:
    """Confusion matrix and top-losses grid of the learner in `model_dir` on fold `fold` of `table`
    (which must be the fold the learner did not train on)."""
    ts = load_settings(Path(model_dir) / f'{task}.settings.ini').tasks[task]   # the settings it was trained with
    learn = load_task_learner(model_dir, task)
    learn.dls = task_dls(table.assign(is_valid=table.fold == fold), ts, workers=workers)
    interp = ClassificationInterpretation.from_learner(learn)
    out_dir = Path(out_dir)
    written = []
    for name, draw, kwargs in (('confusion', interp.plot_confusion_matrix, {}),
                               ('top_losses', interp.plot_top_losses, {'k': k, 'nrows': 3})):
        draw(**kwargs)
        written.append(save_figure(pyplot().gcf(), out_dir / f'{task}_fold{fold}_{name}.png'))
    return written
