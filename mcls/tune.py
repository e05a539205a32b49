"""Decision tuning for macro F1: per-class logit offsets fitted on out-of-fold probabilities."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from .atomic import write_text_atomic
from .errors import DataError
from .labels import task_labels
from .probfiles import read_folds

__all__ = ['apply_offsets', 'fit_offsets', 'load_oof', 'read_offsets', 'write_offsets', 'TUNING_FILE']

TUNING_FILE = 'tuning.json'


def apply_offsets(probs: np.ndarray, offsets=None) -> np.ndarray:
    "Log-probabilities plus per-class offsets (argmax of the result is the decision); no offsets: log-probs."
    logp = np.log(np.clip(probs, 1e-9, 1.0))
    return logp if offsets is None else logp + np.asarray(offsets)


def _macro_f1(y, probs, offsets) -> float:
    return f1_score(y, apply_offsets(probs, offsets).argmax(1), average='macro', labels=range(probs.shape[1]),
                    zero_division=0)


def fit_offsets(probs: np.ndarray, y: np.ndarray, grid=np.linspace(-2, 2, 41), rounds: int = 3):
    """Coordinate ascent on the per-class offsets, starting from zero and accepting only strict gains,
    so the F1 on the data it was fitted on never goes down. Returns (offsets, f1_before, f1_after)."""
    offsets = np.zeros(probs.shape[1])
    before = best = _macro_f1(y, probs, offsets)
    for _ in range(rounds):
        improved = False
        for c in range(1, probs.shape[1]):    # class 0's offset is fixed at 0: only differences matter
            for v in grid:
                trial = offsets.copy()
                trial[c] = v
                f = _macro_f1(y, probs, trial)
                if f > best + 1e-9: best, offsets, improved = f, trial, True
        if not improved: break
    return offsets, before, best


def load_oof(model_dirs: list[Path], task: str) -> tuple[np.ndarray, np.ndarray]:
    "Concatenate the validation probabilities saved with each fold's model (out-of-fold when folds differ)."
    folds = read_folds(model_dirs, task, 'train with --fold (not --full) to make these validation probabilities')
    return (np.concatenate([z['probs'] for z in folds]),
            np.concatenate([task_labels(z['labels'], task) for z in folds]))   # true groups, whatever the boundary


def write_offsets(model_dir: Path, offsets: dict[str, list[float]], report: dict):
    write_text_atomic(Path(model_dir) / TUNING_FILE, json.dumps({'offsets': offsets, 'report': report}, indent=1))


def read_offsets(model_dir: Path) -> dict[str, np.ndarray]:
    p = Path(model_dir) / TUNING_FILE
    if not p.exists(): return {}
    try:
        return {t: np.asarray(v, dtype=float) for t, v in json.loads(p.read_text())['offsets'].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f'{p}: not a valid tuning file ({type(e).__name__}: {e}); run `mcls tune` again or '
                        f'delete it') from None
