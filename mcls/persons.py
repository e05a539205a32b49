"""Person-consistent predictions: group unlabelled photos into persons, then decide gender and age per group and mask
states 5/1/1 within a group of about 7, only where that costs little over the per-photo answers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import AgglomerativeClustering

from .atomic import write_text_atomic
from .labels import MASK_STEMS, encode

__all__ = ['PERSON_SIZE', 'MASK_SLOTS', 'THRESHOLDS', 'PERSONS_FILE', 'UPPER_FACE', 'pooled_features', 'photo_embeddings',
           'group_photos', 'pair_scores', 'choose_threshold', 'assign_masks', 'consistent_labels', 'group_quality',
           'load_threshold', 'save_threshold']

PERSON_SIZE = len(MASK_STEMS)                   # 7 photos a person
MASK_SLOTS = np.array(sorted(MASK_STEMS.values()))   # 5 worn, 1 incorrect, 1 not worn
THRESHOLDS = np.round(np.arange(0.02, 0.62, 0.02), 2)   # cosine distances tried on known persons
PERSONS_FILE = 'persons.json'


UPPER_FACE = 0.45      # share of the face crop from the top that masks leave uncovered (eyes, brows, hair)


def pooled_features(learn, images: list, bs: int = 64) -> np.ndarray:
    "Globally pooled backbone features of photos (paths or PIL images) as the learner sees them."
    import torch
    dl = learn.dls.test_dl(pd.DataFrame({'crop': list(images)}), bs=bs)
    body = learn.model[0].eval()
    out = []
    with torch.no_grad():
        for (xb,) in dl: out.append(body(xb).float().mean((2, 3)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def photo_embeddings(learn, crops: list[str]) -> np.ndarray:
    """Unit-length backbone features of the upper face, which masks do not cover. The whole crop or photo does
    not serve: a backbone trained on mask states puts one person's masked and unmasked photos far apart (on the
    600-person build those embeddings grouped no eval person at all; docs/quality.md)."""
    from PIL import Image

    def upper(f):
        with Image.open(f) as im: return im.convert('RGB').crop((0, 0, im.width, round(im.height * UPPER_FACE)))
    return _unit(pooled_features(learn, [upper(f) for f in crops]))


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


def choose_threshold(emb: np.ndarray, persons: np.ndarray, beta: float = 0.5, min_precision: float = 0.95) -> dict:
    """The distance threshold with the best pairwise F-beta on photos of known persons, among those whose
    pairwise precision reaches `min_precision`; beta < 1 weighs precision: a wrong merge changes answers, a
    missed one only leaves them per photo. No threshold qualifies (weak embeddings): 0.0, which groups nothing."""
    best = {'threshold': 0.0, 'f': 0.0, 'precision': 1.0, 'recall': 0.0}
    for t in THRESHOLDS:
        p, r = pair_scores(group_photos(emb, float(t)), persons)
        f = (1 + beta ** 2) * p * r / (beta ** 2 * p + r) if p + r else 0.0
        if p >= min_precision and f > best['f']: best = {'threshold': float(t), 'f': float(f), 'precision': p, 'recall': r}
    return {**best, 'photos': int(len(emb)), 'beta': beta, 'min_precision': min_precision}


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


def consistent_labels(logp: dict[str, np.ndarray], groups: np.ndarray, margin: float) -> tuple[np.ndarray, dict]:
    """18-class labels from per-task decision scores (log-probabilities plus tuned offsets): gender and age from
    the group's mean, mask states assigned within groups of about 7. Single photos keep their own answers."""
    m, g, a = (logp[t].argmax(1) for t in ('mask', 'gender', 'age'))
    assigned = 0
    for gid in np.unique(groups):
        idx = np.flatnonzero(groups == gid)
        if len(idx) < 2: continue
        g[idx] = logp['gender'][idx].mean(0).argmax()
        a[idx] = logp['age'][idx].mean(0).argmax()
        masks = assign_masks(logp['mask'][idx], margin)
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


def save_threshold(model_dir: Path, info: dict):
    write_text_atomic(Path(model_dir) / PERSONS_FILE, json.dumps(info, indent=1))


def load_threshold(model_dir: Path) -> dict | None:
    "The cached threshold, or None (absent or unreadable: it is chosen again)."
    try:
        info = json.loads((Path(model_dir) / PERSONS_FILE).read_text())
        return info if isinstance(info, dict) and 'threshold' in info else None
    except (OSError, ValueError):
        return None
