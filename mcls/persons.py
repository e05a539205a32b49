"""Person-consistent predictions: group unlabelled photos into persons by face identity (mcls.identity), then decide
the tasks of [predict] persons_tasks per group: gender and age from the group's mean, mask states 5/1/1 within a
group of about 7, only where that costs little over the per-photo answers."""
from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import AgglomerativeClustering

from .atomic import write_text_atomic
from .labels import LABEL_TASKS, MASK_STEMS, encode

log = logging.getLogger(__name__)

__all__ = ['PERSON_SIZE', 'MASK_SLOTS', 'THRESHOLDS', 'MIN_PRECISION', 'group_photos', 'pair_scores',
           'choose_threshold', 'fold0_photos', 'fold0_jittered_crops', 'person_threshold', 'group_eval', 'assign_masks',
           'consistent_labels', 'group_quality', 'persons_table', 'group_sheet']

PERSON_SIZE = len(MASK_STEMS)                   # 7 photos a person
MASK_SLOTS = np.array(sorted(MASK_STEMS.values()))   # 5 worn, 1 incorrect, 1 not worn
THRESHOLDS = np.round(np.arange(0.02, 1.0, 0.02), 2)   # cosine distances tried on known persons
MIN_PRECISION = 0.98       # pairwise precision the threshold must reach on known persons: a wrong merge changes answers


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def group_photos(emb: np.ndarray, threshold: float, max_size: int = PERSON_SIZE) -> np.ndarray:
    """Group ids (0..k-1) by average-linkage cosine clustering cut at `threshold`; a group larger than `max_size`
    is split again (see _split). Photos that join nobody stay alone."""
    n = len(emb)
    if n < 2 or threshold <= 0: return np.arange(n)
    labels = AgglomerativeClustering(n_clusters=None, metric='cosine', linkage='average',
                                     distance_threshold=threshold).fit_predict(emb)
    out = np.empty(n, int)
    parts = [p for g in np.unique(labels) for p in _split(_unit(emb), np.flatnonzero(labels == g), max_size)]
    for k, idx in enumerate(parts): out[idx] = k
    return out


def _split(emb: np.ndarray, idx: np.ndarray, max_size: int) -> list[np.ndarray]:
    """Split a group into ceil(size / max_size) by Ward linkage, which makes parts of even size (average linkage
    peels off single outliers), again until every part fits."""
    if len(idx) <= max_size: return [idx]
    sub = AgglomerativeClustering(n_clusters=math.ceil(len(idx) / max_size), linkage='ward').fit_predict(emb[idx])
    return [p for s in np.unique(sub) for p in _split(emb, idx[sub == s], max_size)]


def pair_scores(groups: np.ndarray, persons: np.ndarray) -> tuple[float, float]:
    "Pairwise precision and recall of a grouping against the true persons (pairs of photos put together)."
    g = pd.crosstab(groups, persons).to_numpy().astype(float)
    together = (g * (g - 1) / 2).sum()
    pred = (g.sum(1) * (g.sum(1) - 1) / 2).sum()
    true = (g.sum(0) * (g.sum(0) - 1) / 2).sum()
    return (together / pred if pred else 1.0), (together / true if true else 1.0)


def choose_threshold(emb: np.ndarray, persons: np.ndarray, beta: float = 0.5,
                     min_precision: float = MIN_PRECISION) -> dict:
    """The distance threshold with the best pairwise F-beta on photos of known persons, among those whose
    pairwise precision reaches `min_precision`; beta < 1 weighs precision: a wrong merge changes answers, a
    missed one only leaves them per photo. No threshold qualifies (weak embeddings): 0.0, which groups nothing."""
    best = {'threshold': 0.0, 'f': 0.0, 'precision': 1.0, 'recall': 0.0}
    for t in THRESHOLDS:
        p, r = pair_scores(group_photos(emb, float(t)), persons)
        f = (1 + beta ** 2) * p * r / (beta ** 2 * p + r) if p + r else 0.0
        if p >= min_precision and f > best['f']: best = {'threshold': float(t), 'f': float(f), 'precision': p,
                                                         'recall': r}
    return {**best, 'photos': int(len(emb)), 'beta': beta, 'min_precision': min_precision}


def fold0_photos(s, max_persons: int = 80) -> pd.DataFrame:
    "The training photos of fold 0's first `max_persons` persons (fold-0 learners never trained on them)."
    from .dataset import load_train
    from .folds import assign_folds
    train = load_train(s.paths.data, s.paths.corrections)
    train = train[assign_folds(train, s.split.folds, s.split.by, s.split.seed) == 0]
    return train[train.person.isin(train.person.drop_duplicates().head(max_persons))]


def fold0_jittered_crops(s, train: pd.DataFrame, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Crops of jittered copies of `train`'s photos (persons known, labels unread): each photo its own shift,
    scale, rotation, colour and JPEG quality, as separate captures of a person differ. Deterministic, so the crops
    come from the cache after the first time."""
    import tempfile
    from PIL import Image
    from .crop import crop_images
    from .jitter import jitter_bytes
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, f in enumerate(train.file):
            files.append(str(Path(tmp) / f'{i}.jpg'))
            with Image.open(f) as im: Path(files[-1]).write_bytes(jitter_bytes(im, rng))
        crops, _ = crop_images(files, s.crop, s.paths.cache, progress=False)
    keep = [f in crops for f in files]
    return [str(crops[f]) for f in files if f in crops], train.person.to_numpy()[keep]


def person_threshold(s, max_persons: int = 80) -> dict:
    """The face alignment and grouping threshold for these identity weights and crop settings, chosen once on a
    jittered copy of fold 0's photos (persons known there): the best pairwise F-beta at pairwise precision >=
    MIN_PRECISION; cached in the crop cache. Reads train.csv and photos only, never answers."""
    from .identity import ALIGNMENTS, check_weights, identity_embeddings, weights_digest
    weights = check_weights(s.predict.identity_weights)
    train = fold0_photos(s, max_persons)
    key = hashlib.sha1('|'.join([weights_digest(weights), str(s.crop), str(MIN_PRECISION),
                                 *map(str, THRESHOLDS[[0, -1]]), *train.folder.drop_duplicates()]).encode())
    dest = Path(s.paths.cache) / 'persons' / f'threshold-{key.hexdigest()[:12]}.json'
    try:
        return json.loads(dest.read_text())
    except (OSError, ValueError):
        pass
    crops, persons = fold0_jittered_crops(s, train)
    tried = {}
    for how in ALIGNMENTS:
        stats = {}
        emb = identity_embeddings(crops, weights, s.predict.detector_weights, how, stats=stats)
        tried[how] = {**choose_threshold(emb, persons), 'align': how, 'landmarks': stats}
    info = max(tried.values(), key=lambda t: t['f'])
    info = {**info, 'persons': int(len(np.unique(persons))),
            'tried': {h: {k: t[k] for k in ('threshold', 'f', 'precision', 'recall')} for h, t in tried.items()}}
    write_text_atomic(dest, json.dumps(info, indent=1))
    return info


def group_eval(s, crops: list[str]) -> tuple[np.ndarray, np.ndarray, dict]:
    "Person groups of photos (no labels), their identity embeddings and the threshold's record."
    from .identity import identity_embeddings
    info = person_threshold(s)
    if info['threshold'] <= 0:      # switched on but cannot act: say so, never group nothing in silence
        log.warning('persons auto does nothing here: no grouping threshold reached pairwise precision %.2f on %d '
                    'jittered photos of fold 0 with %s, so every photo is decided alone; give other '
                    '[predict] identity_weights or set persons = off', MIN_PRECISION, info.get('photos', 0),
                    s.predict.identity_weights)
    emb = identity_embeddings(crops, s.predict.identity_weights, s.predict.detector_weights, info['align'])
    return group_photos(emb, info['threshold']), emb, info


def assign_masks(logp_mask: np.ndarray, margin: float) -> np.ndarray | None:
    """Mask states for one group of 6-8 photos as 5 worn / 1 incorrect / 1 not worn (Hungarian assignment on
    log-probabilities; with 8 photos one keeps its own answer, with 6 one slot stays empty), or None where the
    assignment costs more than `margin` nats over the per-photo answers (e.g. a person never masked)."""
    n = len(logp_mask)
    if not PERSON_SIZE - 1 <= n <= PERSON_SIZE + 1: return None
    cost = -logp_mask[:, MASK_SLOTS]
    rows, cols = linear_sum_assignment(cost)
    out = logp_mask.argmax(1)
    own = -logp_mask[np.arange(n), out]
    if cost[rows, cols].sum() - own[rows].sum() > margin: return None
    out[rows] = MASK_SLOTS[cols]
    return out


def consistent_labels(logp: dict[str, np.ndarray], groups: np.ndarray, margin: float,
                      tasks: tuple[str, ...] = LABEL_TASKS) -> tuple[np.ndarray, dict]:
    """18-class labels from per-task decision scores (log-probabilities plus tuned offsets), decided per group for
    `tasks`: gender and age from the group's mean, mask states assigned within groups of about 7. Other tasks, and
    single photos, keep their own answers."""
    m, g, a = (logp[t].argmax(1) for t in LABEL_TASKS)
    assigned = 0
    for gid in np.unique(groups):
        idx = np.flatnonzero(groups == gid)
        if len(idx) < 2: continue
        if 'gender' in tasks: g[idx] = logp['gender'][idx].mean(0).argmax()
        if 'age' in tasks: a[idx] = logp['age'][idx].mean(0).argmax()
        masks = assign_masks(logp['mask'][idx], margin) if 'mask' in tasks else None
        if masks is not None: m[idx], assigned = masks, assigned + 1
    sizes = np.bincount(groups)
    return encode(m, g, a), {'groups': int(len(sizes)), 'grouped_photos': int(sizes[sizes > 1].sum()),
                             'groups_of_7': int((sizes == PERSON_SIZE).sum()), 'mask_assigned_groups': assigned}


def group_quality(groups: np.ndarray, persons: np.ndarray) -> dict:
    """Purity: share of photos whose group holds one person only. Completeness: share of photos whose person
    lies in one group. And the share of groups of exactly 7."""
    df = pd.DataFrame({'g': groups, 'p': persons})
    pure = df.groupby('g').p.transform('nunique') == 1
    whole = df.groupby('p').g.transform('nunique') == 1
    sizes = df.g.value_counts()
    return {'purity': float(pure.mean()), 'completeness': float(whole.mean()),
            'groups_of_7': float((sizes == PERSON_SIZE).mean()), 'groups': int(len(sizes))}


def persons_table(image_ids, groups: np.ndarray, emb: np.ndarray) -> pd.DataFrame:
    """ImageID, group, size and similarity (mean cosine similarity to the other photos of its group; 1 alone),
    the least certain groups first when sorted by similarity."""
    emb = _unit(emb)
    sim = np.ones(len(groups))
    for gid in np.unique(groups):
        idx = np.flatnonzero(groups == gid)
        if len(idx) > 1:
            s = emb[idx] @ emb[idx].T
            sim[idx] = (s.sum(1) - 1) / (len(idx) - 1)
    sizes = np.bincount(groups)
    return pd.DataFrame({'ImageID': list(image_ids), 'group': groups, 'size': sizes[groups],
                         'similarity': sim.round(4)})


def group_sheet(table: pd.DataFrame, crops: list[str], dest: Path, n: int = 8) -> Path:
    "A contact sheet: the `n` largest groups, then the `n` least certain ones (lowest mean similarity), a row each."
    from PIL import Image
    from .plots import pyplot, save_figure
    df = table.assign(crop=list(crops))
    per = df.groupby('group').agg(size=('size', 'first'), similarity=('similarity', 'mean'))
    multi = per[per['size'] > 1]
    largest = multi.sort_values(['size', 'similarity'], ascending=[False, True]).head(n).index
    unsure = multi.drop(largest).sort_values('similarity').head(n).index
    rows = [(g, 'largest') for g in largest] + [(g, 'least certain') for g in unsure]
    cols = max([PERSON_SIZE, *(int(per['size'][g]) for g, _ in rows)]) if rows else PERSON_SIZE
    fig, axes = pyplot().subplots(max(len(rows), 1), cols, figsize=(1.3 * cols, 1.5 * max(len(rows), 1)), squeeze=False)
    for ax in axes.flat: ax.axis('off')
    for r, (g, why) in enumerate(rows):
        members = df[df.group == g]
        for c, m in enumerate(members.itertuples()):
            axes[r, c].imshow(Image.open(m.crop).convert('RGB'))
            axes[r, c].set_title(f'{m.ImageID[:12]}\n{m.similarity:.2f}', fontsize=6)
        axes[r, 0].text(-0.1, 0.5, f'{why}\ngroup {g}, {len(members)}', transform=axes[r, 0].transAxes,
                        ha='right', va='center', fontsize=7)
    return save_figure(fig, dest)
