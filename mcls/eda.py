"""Exploratory summaries of an image table: the seed's distributions as tables and PNG plots."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import train_rows
from .labels import AGE_NAMES, GENDERS, MASK_NAMES, N_CLASSES, age_group, class_name
from .plots import pyplot, save_figure

__all__ = ['distributions', 'plot_distributions']


def _count(series: pd.Series, names) -> pd.DataFrame:
    counts = series.value_counts().reindex(range(len(names)), fill_value=0)
    return pd.DataFrame({'value': list(names), 'count': counts.to_numpy(),
                         'share': counts.to_numpy() / max(len(series), 1)})


def distributions(df: pd.DataFrame, boundary: int = 60) -> dict[str, pd.DataFrame]:
    """Per-person gender and age group (true and at the training `boundary`), per-photo mask, and the 18 classes.
    Only training rows count."""
    tr = train_rows(df)
    persons = tr.drop_duplicates('person')
    return {
        'gender (persons)': _count(persons.gender, GENDERS),
        'age group (persons)': _count(persons.age_group, AGE_NAMES),
        f'age group at boundary {boundary} (persons)':
            _count(pd.Series(age_group(persons.age.to_numpy(), boundary)), AGE_NAMES),
        'mask (photos)': _count(tr['mask'], MASK_NAMES),
        'class (photos)': _count(tr.label, [f'{i:2d} {class_name(i)}' for i in range(N_CLASSES)]),
    }


def plot_distributions(df: pd.DataFrame, out_dir: Path | str, boundary: int = 60) -> list[Path]:
    "Write gender, age histogram (with group boundaries), mask and class plots as PNGs; returns their paths."
    plt = pyplot()
    out_dir = Path(out_dir)
    persons = train_rows(df).drop_duplicates('person')
    tables = distributions(df, boundary)
    written = []

    def save(fig, name): written.append(save_figure(fig, out_dir / name))

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.hist(persons.age, bins=np.arange(persons.age.min(), persons.age.max() + 2) - 0.5, color='tab:blue')
    for b, style in ((30, '-'), (60, '-'), (boundary, '--')):
        ax.axvline(b - 0.5, color='tab:red', linestyle=style)
    ax.set(title=f'age of persons (group boundaries 30 / 60; training boundary {boundary} dashed)',
           xlabel='age', ylabel='persons')
    save(fig, 'age_hist.png')
    for key, name in (('gender (persons)', 'gender.png'), ('mask (photos)', 'mask.png'),
                      ('class (photos)', 'classes.png')):
        t = tables[key]
        fig, ax = plt.subplots(figsize=(10 if len(t) > 3 else 4, 4))
        ax.bar(t.value, t['count'], color='tab:green')
        ax.set(title=key, ylabel='count')
        ax.tick_params(axis='x', rotation=90 if len(t) > 3 else 0)
        save(fig, name)
    return written
