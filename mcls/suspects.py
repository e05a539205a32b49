"""Label-error suspects: out-of-sample probabilities of every training photo, ranked by cleanlab's label quality
(gender and age per person, mask per photo), shown as pictures and accepted into the corrections file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import write_csv_atomic
from .dataset import read_corrections
from .modeldirs import export_dir_for, learners_in
from .errors import DataError
from .labels import SCORE_BOUNDARY, VALUE_NAMES
from .probfiles import read_folds
from .pseudo import GROUP_YEARS

__all__ = ['SUSPECT_COLUMNS', 'oof_models', 'oof_probs', 'rank_suspects', 'suspect_table', 'contact_sheet',
           'accept_suspects']

SUSPECT_COLUMNS = ['key', 'field', 'given', 'suggested', 'value', 'score', 'crop']


def oof_models(s, folds: int = 3, progress: bool = True) -> list[Path]:
    """Train what `train all` trains ([train] mode) on each of `folds` person-aware folds into <models>/oof/fold{k},
    age on the true groups (boundary 60): every training photo then has out-of-sample probabilities."""
    import dataclasses
    from .settings import learners_for
    from .train import train_learners, training_table
    models = Path(s.paths.models) / 'oof'
    s = dataclasses.replace(s, split=dataclasses.replace(s.split, folds=folds),
                            paths=dataclasses.replace(s.paths, models=models),
                            tasks={t: dataclasses.replace(ts, boundary=SCORE_BOUNDARY) for t, ts in s.tasks.items()})
    train_learners(training_table(s, progress=progress), s, learners_for('all', s), list(range(folds)),
                   progress=progress)
    return [export_dir_for(s, k) for k in range(folds)]


def oof_probs(model_dirs: list[Path], task: str) -> pd.DataFrame:
    """Raw softmax probabilities (no tuned offsets) of each photo from the validation files of fold models:
    out-of-sample when each photo was in one fold's validation. Age must be in the true groups (boundary 60)."""
    import json
    for d in map(Path, model_dirs):
        meta = d / ('joint.json' if learners_in(d) == ('joint',) else 'age.json')
        boundary = json.loads(meta.read_text()).get('boundary') if task == 'age' and meta.exists() else None
        if boundary not in (None, SCORE_BOUNDARY):
            raise DataError(f'{meta}: trained with age boundary != {SCORE_BOUNDARY}: suspects need the true age '
                            f'groups; train the fold models with --boundary {SCORE_BOUNDARY}')
    folds = read_folds(model_dirs, task, 'train the folds with --fold all to make it')
    return pd.concat([pd.DataFrame({'file': z['files'], 'probs': list(z['probs'])}) for z in folds], ignore_index=True)


def rank_suspects(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    "cleanlab's label quality score of every item (lower: more likely mislabelled) and the most likely label."
    from cleanlab.rank import get_label_quality_scores
    probs = np.asarray(probs, float)
    probs = probs / probs.sum(1, keepdims=True)
    return get_label_quality_scores(np.asarray(labels, int), probs), probs.argmax(1)


def suspect_table(table: pd.DataFrame, oof: pd.DataFrame, task: str) -> pd.DataFrame:
    """Every item ranked, most suspicious first, keyed as the corrections file keys it: a person id for gender and
    age (the mean of the person's photo probabilities: folds are by person), `folder/stem` for a photo's mask.
    `value` is what accepting writes: a name, or for age a year inside the suggested group."""
    df = table.merge(oof, on='file', how='inner')
    if df.empty:
        raise DataError('no training photo has out-of-fold probabilities: were the models trained on this data?')
    col = {'mask': 'mask', 'gender': 'gender', 'age': 'age_group'}[task]
    if task == 'mask':
        items = df.assign(key=df.folder + '/' + df.stem)
    else:   # one row per person: its label, its photos' mean probabilities, its unmasked photo to look at
        first = df.sort_values('mask', ascending=False).groupby('person', sort=False).head(1).set_index('person')
        probs = df.groupby('person', sort=False).probs.apply(lambda p: np.mean(np.stack(p.to_numpy()), 0))
        items = first.assign(probs=probs).reset_index().assign(key=lambda d: d.person)
    scores, best = rank_suspects(items[col].to_numpy(), np.stack(items.probs.to_numpy()))
    names = VALUE_NAMES[task]
    value = [str(GROUP_YEARS[b]) if task == 'age' else names[b] for b in best]
    out = pd.DataFrame({'key': items.key.to_numpy(), 'field': task, 'given': [names[g] for g in items[col]],
                        'suggested': [names[b] for b in best], 'value': value, 'score': scores,
                        'crop': items.crop.to_numpy()})
    return out.sort_values('score', kind='stable').reset_index(drop=True)


def contact_sheet(suspects: pd.DataFrame, dest: Path, n: int = 24, cols: int = 6) -> Path:
    "The top `n` suspects as pictures, each titled with its key, given label, suggested label and score."
    from PIL import Image
    from .plots import pyplot, save_figure
    top = suspects.head(n)
    rows = max(1, -(-len(top) // cols))
    fig, axes = pyplot().subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat: ax.axis('off')
    for ax, r in zip(axes.flat, top.itertuples()):
        ax.imshow(Image.open(r.crop).convert('RGB'))
        ax.set_title(f'{r.key}\n{r.given} -> {r.suggested} ({r.score:.2f})', fontsize=7)
    return save_figure(fig, dest)


def accept_suspects(suspects: pd.DataFrame, corrections: Path, n: int | None = None) -> int:
    """Write the top `n` suspects (all given rows when None) into the corrections CSV `key,field,value`: a row
    for the same key and field is replaced, so accepting twice changes nothing. Atomic. Returns rows written."""
    corrections = Path(corrections)
    new = suspects.head(n) if n is not None else suspects
    new = new[new.given != new.suggested][['key', 'field', 'value']].astype(str)
    old = (read_corrections(corrections) if corrections.exists()
           else pd.DataFrame(columns=['key', 'field', 'value']))
    merged = pd.concat([old[['key', 'field', 'value']], new], ignore_index=True)
    merged = merged.drop_duplicates(['key', 'field'], keep='last')
    write_csv_atomic(merged, corrections)
    return len(new)
