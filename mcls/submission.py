"""A submission and its probabilities are one pair: `<out>` (ImageID,ans) and `<out>.probs.npz` (per-task
probabilities, optional person groups), written together and checked together."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_paths, read_npz
from .errors import DataError
from .labels import TASK_CLASSES
from .probfiles import check_probs

__all__ = ['probs_path', 'write_submission', 'read_submission_probs']

TOKEN = 'submission_sha1'      # in the .npz: the SHA-1 of the CSV bytes written with it


def probs_path(submission: Path | str) -> Path:
    return Path(f'{submission}.probs.npz')


def write_submission(sub: pd.DataFrame, arrays: dict[str, np.ndarray], out: Path | str) -> Path:
    """Write `out` and its `.probs.npz` (`arrays` plus the ImageIDs and the CSV's digest) as a pair: both are
    written whole before either is renamed into place, the probabilities first."""
    out = Path(out)
    text = sub.to_csv(index=False)
    with atomic_paths(probs_path(out), out) as (tmp_probs, tmp_csv):
        with open(tmp_probs, 'wb') as fh:
            np.savez(fh, image_ids=sub.ImageID.to_numpy().astype(str), **arrays,
                     **{TOKEN: np.array(hashlib.sha1(text.encode()).hexdigest())})
        Path(tmp_csv).write_text(text)
    return out


def read_submission_probs(submission: Path | str, keys: tuple[str, ...], fix: str) -> dict:
    """The `.probs.npz` beside `submission`, refused when it belongs to another CSV (a predict killed between the
    two renames, or a CSV edited by hand). Files written before the pairing digest existed are taken as they are."""
    z = read_npz(probs_path(submission), ('image_ids', *keys), fix)
    if TOKEN in z and str(z[TOKEN]) != hashlib.sha1(Path(submission).read_bytes()).hexdigest():
        raise DataError(f'{probs_path(submission)}: written with another {Path(submission).name} than the one beside '
                        f'it (a predict interrupted, or the CSV edited); run `mcls predict` again')
    for t in TASK_CLASSES:
        if t in keys: z[t] = check_probs(z[t], t, str(probs_path(submission)), len(z['image_ids']))
    return z
