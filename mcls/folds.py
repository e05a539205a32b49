"""Validation folds: person-aware (the default) or label-wise over images, as the seed compared both."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

__all__ = ['assign_folds', 'fold_mask']


def assign_folds(df: pd.DataFrame, n_folds: int = 5, by: str = 'person', seed: int = 777) -> np.ndarray:
    """Fold number (0..n_folds-1) of each row of an image table.
    by='person': StratifiedGroupKFold grouped by person, stratified by gender x true age group, so every
    photo of a person lands in one fold. by='image': StratifiedKFold over the 18-class label (leaks persons)."""
    from .errors import DataError
    if n_folds < 2: raise DataError(f'[split] folds = {n_folds}: person-aware validation needs at least 2 folds')
    n_groups = df.person.nunique() if by == 'person' else len(df)
    if n_folds > n_groups:
        raise DataError(f'[split] folds = {n_folds} but the data has {n_groups} '
                        f'{"persons" if by == "person" else "photos"}: use at most {n_groups} folds')
    folds = np.full(len(df), -1)
    if by == 'person':
        y = (df.gender * 3 + df.age_group).to_numpy()
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(df)), y, groups=df.person.to_numpy())
    elif by == 'image':
        splits = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(
            np.zeros(len(df)), df.label.to_numpy())
    else:
        raise ValueError(f"by must be 'person' or 'image', got {by!r}")
    for k, (_, valid) in enumerate(splits): folds[valid] = k
    return folds


def fold_mask(folds: np.ndarray, k: int) -> np.ndarray:
    "Boolean is-valid column for fold k."
    if not 0 <= k <= folds.max(): raise ValueError(f'fold {k} does not exist: folds are 0-{folds.max()}')
    return folds == k
