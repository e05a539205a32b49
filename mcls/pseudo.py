"""Pseudo-labels: eval photos predicted confidently join the training rows (never validation). This makes any
score on those eval photos transductive: report it apart from the per-photo score."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import read_npz
from .crop import attach_crops
from .dataset import load_eval
from .errors import DataError
from .labels import LABEL_TASKS, encode
from .probfiles import check_probs
from .settings import Settings

__all__ = ['GROUP_YEARS', 'pseudo_rows', 'add_pseudo']

GROUP_YEARS = (24, 45, 66)     # a year inside each age group, for heads that learn years


def pseudo_rows(probs_file: Path | str, min_prob: float, eval_ids=None) -> pd.DataFrame:
    """Eval photos whose every task's top probability reaches `min_prob`, with those labels: ImageID, mask,
    gender, age_group, age (a year inside the group), confidence, and the person group when predict found one.
    With `eval_ids` (info.csv's), the file must hold predictions of exactly those photos."""
    path = Path(probs_file)
    z = read_npz(path, ('image_ids', *LABEL_TASKS), 'give the <submission>.probs.npz `mcls predict` writes')
    for t in LABEL_TASKS: z[t] = check_probs(z[t], t, str(path), len(z['image_ids']))
    if not 0 < min_prob <= 1: raise DataError(f'--min-prob {min_prob}: give a probability in (0, 1]')
    if eval_ids is not None:
        ids, listed = [str(i) for i in z['image_ids']], set(map(str, eval_ids))
        foreign = [i for i in ids if i not in listed]
        if foreign or len(set(ids)) != len(listed):
            first = foreign[0] if foreign else sorted(listed - set(ids))[0]
            raise DataError(f'{path}: predicted for other eval photos than this data set\'s eval/info.csv '
                            f'({len(foreign)} of its {len(ids)} ImageIDs are not listed there, '
                            f'{len(listed - set(ids))} '
                            f'listed photos have no prediction; first {first!r}); give the .probs.npz that '
                            f'`mcls predict` wrote for this data')
    conf = np.min([z[t].max(1) for t in LABEL_TASKS], axis=0)
    keep = conf >= min_prob
    age = z['age'].argmax(1)
    df = pd.DataFrame({'ImageID': z['image_ids'], 'mask': z['mask'].argmax(1), 'gender': z['gender'].argmax(1),
                       'age_group': age, 'age': np.asarray(GROUP_YEARS)[age], 'confidence': conf})
    if 'groups' in z: df['group'] = z['groups']
    return df[keep].reset_index(drop=True)


def add_pseudo(table: pd.DataFrame, s: Settings, probs_file: Path | str, min_prob: float) -> pd.DataFrame:
    """The training table plus pseudo-labelled eval photos (fold -1: training rows of every fold, `pseudo`
    True), cropped through the cache. train_task lists them in the run folder (pseudo.csv)."""
    ev = load_eval(s.paths.data).assign(split='eval')
    rows = pseudo_rows(probs_file, min_prob, ev.image_id)
    ev = ev[ev.image_id.isin(rows.ImageID)]
    ev, _ = attach_crops(ev, s.crop, s.paths.cache, progress=False)
    rows = rows.merge(ev[['image_id', 'file', 'crop']], left_on='ImageID', right_on='image_id')
    person = ('pseudo-group-' + rows.group.astype(str)) if 'group' in rows else ('pseudo-' + rows.ImageID)
    extra = pd.DataFrame({'file': rows.file, 'person': person, 'folder': 'eval', 'stem': rows.ImageID,
                          'mask': rows['mask'], 'gender': rows.gender, 'age': rows.age, 'race': '',
                          'age_group': rows.age_group, 'label': encode(rows['mask'], rows.gender, rows.age_group),
                          'crop': rows.crop, 'fold': -1, 'pseudo': True})
    return pd.concat([table.assign(pseudo=False), extra], ignore_index=True)
