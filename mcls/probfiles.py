"""Probability files read back (a run's `<task>.valid.npz`, a submission's `.probs.npz`): checked before use, so a
damaged or foreign file is one error naming it, never a wrong score or a traceback further on."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import read_npz
from .errors import DataError
from .labels import N_CLASSES, TASK_CLASSES

__all__ = ['check_probs', 'check_labels', 'read_valid', 'read_folds']


def check_probs(probs: np.ndarray, task: str, source: str, n: int | None = None) -> np.ndarray:
    "`probs` as a (photos, classes of `task`) table of finite values in [0, 1] (`n` rows where given), or a DataError."
    p = np.asarray(probs)
    k = TASK_CLASSES[task]
    if p.ndim != 2 or p.shape[1] != k or (n is not None and len(p) != n):
        want = f'({n if n is not None else "photos"}, {k})'
        raise DataError(f'{source}: {task} probabilities of shape {p.shape}, not {want}; not a file of this '
                        f'18-class layout or not of these photos')
    if not np.issubdtype(p.dtype, np.number):
        raise DataError(f'{source}: {task} probabilities are not numbers ({p.dtype})')
    bad = ~np.isfinite(p) | (p < 0) | (p > 1 + 1e-6)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f'{source}: {task} probability {p[i, j]} in row {i} is not a number in [0, 1]; the file is '
                        f'damaged: make it again')
    return p.astype(float)


def check_labels(labels: np.ndarray, source: str, n: int | None = None) -> np.ndarray:
    "18-class labels: integers 0-17 (`n` of them where given), or a DataError."
    y = np.asarray(labels)
    if y.ndim != 1 or (n is not None and len(y) != n):
        raise DataError(f'{source}: labels of shape {y.shape}, not ({n if n is not None else "photos"},)')
    if not np.issubdtype(y.dtype, np.integer): raise DataError(f'{source}: labels are not integers ({y.dtype})')
    bad = y[(y < 0) | (y >= N_CLASSES)]
    if len(bad):
        raise DataError(f'{source}: label {bad[0]} is not a class 0-{N_CLASSES - 1}; the file is damaged: make it '
                        f'again')
    return y.astype(int)


def read_valid(folder: Path | str, task: str, fix: str) -> dict[str, np.ndarray]:
    "`<task>.valid.npz` of a run or model folder: photo files, 18-class labels and `task` probabilities, checked."
    path = Path(folder) / f'{task}.valid.npz'
    z = read_npz(path, ('files', 'probs', 'labels'), fix)
    files = z['files'].astype(str)
    return {'files': files, 'labels': check_labels(z['labels'], str(path), len(files)),
            'probs': check_probs(z['probs'], task, str(path), len(files))}


def read_folds(folders, task: str, fix: str) -> list[dict[str, np.ndarray]]:
    """`read_valid` of several fold folders, pooled by the caller: a photo in the validation of two of them (two
    folders of one fold, or of two trainings) is refused, so that each photo counts once."""
    out, seen = [], {}
    for d in folders:
        z = read_valid(d, task, fix)
        twice = next((f for f in z['files'] if f in seen), None)
        if twice is not None:
            raise DataError(f'{twice} is in the validation of both {seen[twice]} and {d} (two model folders of one '
                            f'fold, or of two trainings): give one per fold of one training, so that each photo '
                            f'counts once')
        seen.update(dict.fromkeys(z['files'], d))
        out.append(z)
    return out
