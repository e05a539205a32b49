"""Scoring a submission against answers: 18-class macro F1, per-task F1, per-class table, confusion matrix."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from .csvs import read_csv
from .errors import DataError
from .labels import LABEL_TASKS, N_CLASSES, class_name, decode
from .plots import pyplot, save_figure

__all__ = ['Scores', 'read_labels', 'score', 'evaluate_files', 'plot_confusion', 'persons_of', 'grouping_quality']


@dataclass
class Scores:
    f1: float                        # 18-class macro F1 (the competition metric)
    accuracy: float
    task_f1: dict[str, float]        # macro F1 of mask, gender, age decoded from the labels
    per_class: pd.DataFrame          # class, name, precision, recall, f1, support
    confusion: np.ndarray


def read_labels(path: Path | str) -> pd.DataFrame:
    "A CSV with ImageID,ans where ans is a class 0-17; a clear error otherwise."
    path = Path(path)
    df = read_csv(path, ('ImageID', 'ans'), 'It needs the header ImageID,ans and one class 0-17 per row.')
    df['ImageID'] = df.ImageID.str.strip()
    ans = pd.to_numeric(df.ans.str.strip(), errors='coerce')
    bad = df[ans.isna() | (ans < 0) | (ans >= N_CLASSES) | (ans % 1 != 0)]
    if len(bad): raise DataError(f'{path}: row {bad.index[0] + 2}: ans {bad.ans.iloc[0]} is not a class 0-17')
    if df.ImageID.duplicated().any():
        raise DataError(f'{path}: ImageID {df.ImageID[df.ImageID.duplicated()].iloc[0]} appears twice')
    return df.assign(ans=ans.astype(int))


def score(y_true, y_pred) -> Scores:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(N_CLASSES))
    p, r, f, n = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    table = pd.DataFrame({'class': labels, 'name': [class_name(c) for c in labels], 'precision': p, 'recall': r,
                          'f1': f, 'support': n})
    td, pd_ = decode(y_true), decode(y_pred)
    task_f1 = {t: float(f1_score(td[i], pd_[i], average='macro', zero_division=0))
               for i, t in enumerate(LABEL_TASKS)}
    return Scores(float(f1_score(y_true, y_pred, average='macro', labels=labels, zero_division=0)),
                  float(accuracy_score(y_true, y_pred)), task_f1, table,
                  confusion_matrix(y_true, y_pred, labels=labels))


def evaluate_files(submission: Path | str, answers: Path | str) -> Scores:
    sub, ans = read_labels(submission), read_labels(answers)
    if not len(ans): raise DataError(f'{answers}: no rows; give the answers of the photos the submission predicts')
    merged = ans.merge(sub, on='ImageID', how='left', suffixes=('_true', '_pred'))
    if merged.ans_pred.isna().any():
        raise DataError(f'{submission}: {int(merged.ans_pred.isna().sum())} ImageID(s) of {answers} have no '
                        f'prediction, first {merged.ImageID[merged.ans_pred.isna()].iloc[0]}')
    extra = sub.ImageID[~sub.ImageID.isin(ans.ImageID)]
    if len(extra):
        raise DataError(f'{answers}: no answer for {len(extra)} ImageID(s) of {submission}, first {extra.iloc[0]}; '
                        f'score against the answers of every photo the submission predicts')
    return score(merged.ans_true.astype(int), merged.ans_pred.astype(int))


def persons_of(image_ids, persons_map: Path | str) -> np.ndarray:
    "The person of each ImageID from a build's `file,split,id` map (benchmarks only: predict never reads it)."
    fix = 'Give a file,id CSV such as a maskfaces build_meta.csv: one person id on every row, one row per photo.'
    meta = read_csv(persons_map, ('file', 'id'), fix)
    meta = meta.assign(photo=meta.file.str.rsplit('/', n=1).str[-1], id=meta.id.str.strip())
    meta = meta[meta.photo.isin(set(image_ids))]      # a build's map lists training photos too, by folder
    if meta.id.eq('').any():
        raise DataError(f'{persons_map}: row {meta.index[meta.id.eq("")][0] + 2} has no person id. {fix}')
    twice = meta.drop_duplicates(['photo', 'id']).photo.duplicated()
    if twice.any():
        raise DataError(f'{persons_map}: photo {meta.photo[twice.index[twice]].iloc[0]} is given two persons. {fix}')
    person = dict(zip(meta.photo, meta.id))
    ids = [person.get(i) for i in image_ids]
    if None in ids:
        raise DataError(f'{persons_map}: no person for ImageID {image_ids[ids.index(None)]}')
    return np.asarray(ids)


def grouping_quality(submission: Path | str, persons_map: Path | str) -> dict:
    """Purity, completeness and share of groups of 7 of the person groups saved beside a submission
    (`<submission>.probs.npz`, written by predict with persons = auto), against a build's `file,split,id` map."""
    from .persons import group_quality
    from .submission import read_submission_probs
    z = read_submission_probs(submission, ('groups',),
                              f'predict with --persons auto writes it, with person groups, beside {submission}')
    return group_quality(z['groups'], persons_of(list(z['image_ids']), persons_map))


def plot_confusion(cm: np.ndarray, dest: Path | str, names=None, title='confusion matrix') -> Path:
    names = names or [str(i) for i in range(len(cm))]
    fig, ax = pyplot().subplots(figsize=(0.5 * len(cm) + 3, 0.5 * len(cm) + 2.5))
    ax.imshow(cm, cmap='Blues')
    ax.set(xticks=range(len(cm)), yticks=range(len(cm)), xticklabels=names, yticklabels=names,
           xlabel='predicted', ylabel='true', title=title)
    ax.tick_params(axis='x', rotation=90)
    for i in range(len(cm)):
        for j in range(len(cm)):
            if cm[i, j]: ax.text(j, i, int(cm[i, j]), ha='center', va='center', fontsize=7,
                                 color='white' if cm[i, j] > cm.max() / 2 else 'black')
    return save_figure(fig, dest)
