"""What a run leaves to look at: `curves.png` (losses and metrics per epoch, from fastai's recorder as history.csv
holds it), `confusion.png` and `report.md` (settings that differ from the packaged defaults, the best epoch, per-task
and per-class F1 on the validation fold)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from .atomic import write_text_atomic
from .evaluate import plot_confusion, score
from .labels import LABEL_TASKS, VALUE_NAMES, encode, task_labels
from .plots import pyplot, save_figure
from .probfiles import read_valid
from .settings import PACKAGED, Settings, load_settings

__all__ = ['read_history', 'plot_curves', 'changed_settings', 'write_run_report']

NOT_PLOTTED = ('epoch', 'time')


def read_history(run_dir: Path) -> pd.DataFrame:
    "history.csv as numbers (fastai writes None where nothing was measured, e.g. validation under --full)."
    df = pd.read_csv(Path(run_dir) / 'history.csv', na_values=['None'], on_bad_lines='skip')
    return df[pd.to_numeric(df.epoch, errors='coerce').notna()].apply(pd.to_numeric, errors='coerce')


def plot_curves(history: pd.DataFrame, dest: Path, title: str) -> Path:
    "Losses on the left, every metric on the right, per epoch."
    plt = pyplot()
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    cols = [c for c in history.columns if c not in NOT_PLOTTED and history[c].notna().any()]
    for c in cols:
        (ax_loss if c.endswith('loss') else ax_metric).plot(history.epoch, history[c], marker='o', label=c)
    for ax, name in ((ax_loss, 'loss'), (ax_metric, 'macro F1')):
        ax.set(xlabel='epoch', ylabel=name)
        if ax.lines: ax.legend(fontsize=8)
        else: ax.text(0.5, 0.5, 'not measured (no validation fold)', ha='center', transform=ax.transAxes)
    fig.suptitle(title)
    return save_figure(fig, dest)


def changed_settings(s: Settings, learner: str) -> list[tuple[str, str, str]]:
    "(key, value, packaged default) of the learner's and the shared sections' values that differ from the packaged."
    packaged = load_settings(PACKAGED, standalone=True).raw
    rows = []
    for sec in (learner, 'paths', 'crop', 'split'):
        for k, v in s.raw.get(sec, {}).items():
            if packaged.get(sec, {}).get(k) != v: rows.append((f'{sec}.{k}', v, packaged.get(sec, {}).get(k, '')))
    return rows


def _per_class(run_dir: Path) -> tuple[list[str], Path | None]:
    "Per-task and per-class F1 of the validation files in `run_dir` (markdown lines) and the confusion picture."
    tasks = [t for t in LABEL_TASKS if (Path(run_dir) / f'{t}.valid.npz').exists()]
    if not tasks: return [], None
    fix = 'train the run again'
    valid = {t: read_valid(run_dir, t, fix) for t in tasks}
    lines = ['| task | class | F1 | photos |', '|---|---|---|---|']
    for t in tasks:
        y, p = task_labels(valid[t]['labels'], t), valid[t]['probs'].argmax(1)
        f, n = precision_recall_fscore_support(y, p, labels=range(len(VALUE_NAMES[t])), zero_division=0)[2:]
        lines.append(f'| {t} | macro | {f1_score(y, p, average="macro", zero_division=0):.4f} | {len(y)} |')
        lines += [f'| {t} | {name} | {fv:.4f} | {int(nv)} |' for name, fv, nv in zip(VALUE_NAMES[t], f, n)]
    if len(tasks) == len(LABEL_TASKS):      # every task: the 18 classes and their confusion matrix
        truth = valid[tasks[0]]['labels']
        sc = score(truth, encode(*(valid[t]['probs'].argmax(1) for t in LABEL_TASKS)))
        lines += ['', f'18-class macro F1 {sc.f1:.4f} (the competition\'s: a class absent from the fold counts 0)', '',
                  '| class | name | F1 | photos |', '|---|---|---|---|']
        lines += [f'| {r.cls} | {r.name} | {r.f1:.4f} | {int(r.support)} |'
                  for r in sc.per_class.rename(columns={'class': 'cls'}).itertuples()]
        picture = plot_confusion(sc.confusion, Path(run_dir) / 'confusion.png', title='validation fold, 18 classes')
    else:
        t = tasks[0]
        y, p = task_labels(valid[t]['labels'], t), valid[t]['probs'].argmax(1)
        picture = plot_confusion(confusion_matrix(y, p, labels=range(len(VALUE_NAMES[t]))),
                                 Path(run_dir) / 'confusion.png', list(VALUE_NAMES[t]), f'validation fold, {t}')
    return lines, picture


def write_run_report(run_dir: Path, s: Settings, learner: str) -> list[Path]:
    "curves.png, confusion.png (with a validation fold) and report.md of a finished run."
    run_dir = Path(run_dir)
    history = read_history(run_dir)
    written = [plot_curves(history, run_dir / 'curves.png', run_dir.name)]
    lines = [f'# {run_dir.name}', '', f'Learner: {learner}. Curves: ![curves](curves.png)', '']
    if 'f1_score' in history and history.f1_score.notna().any():
        best = history.loc[history.f1_score.idxmax()]
        lines.append(f'Best epoch: {int(best.epoch)} of {len(history)} (validation F1 {best.f1_score:.4f}): the '
                     f'exported weights.')
    else:
        lines.append(f'{len(history)} epochs on every training photo (no validation fold): the last is exported.')
    changed = changed_settings(s, learner)
    lines += ['', '## Settings that differ from the packaged defaults', '']
    lines += (['| setting | value | default |', '|---|---|---|', *(f'| {k} | {v} | {d} |' for k, v, d in changed)]
              if changed else ['None.'])
    per_class, picture = _per_class(run_dir)
    if per_class:
        lines += ['', '## Validation fold', '', *per_class, '', '![confusion matrix](confusion.png)']
        written.append(picture)
    write_text_atomic(run_dir / 'report.md', '\n'.join(lines) + '\n')
    return [*written, run_dir / 'report.md']
