"""Is B better than A, and by how much: a paired bootstrap over persons of macro F1 (18 classes and each task) and
log-loss, for submissions scored against answers or for the validation files of run and model folders."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import recover_dir
from .errors import DataError, UserError
from .labels import LABEL_TASKS, N_CLASSES, TASK_CLASSES, encode, task_labels
from .probfiles import read_valid
from .submission import probs_path, read_submission_probs

__all__ = ['Predictions', 'METRICS', 'MIN_DRAWS', 'MAX_DRAWS', 'check_draws', 'read_side', 'compare',
           'plot_differences']

N_OUT = {'f1_18': N_CLASSES, **TASK_CLASSES}      # classes of each F1
METRICS = ('f1_18', *LABEL_TASKS)        # macro F1; log-loss of each task is added where probabilities exist
LOWER_IS_BETTER = 'logloss_'
MIN_DRAWS, MAX_DRAWS = 100, 100_000   # fewer leave 2.5% tails of a few draws; more only cost time and memory
CHUNK_CELLS = 8_000_000       # draws x units weights held at once (64 MB)


@dataclass
class Predictions:
    "One run's decisions on a set of photos (keys), with the truth, and per-task probabilities where saved."
    source: str
    keys: np.ndarray                    # ImageID, or the photo's file for validation predictions
    truth: np.ndarray                   # 18-class labels (true age groups)
    pred: np.ndarray                    # 18-class decisions
    probs: dict[str, np.ndarray] = field(default_factory=dict)


def _align(keys: np.ndarray, want: np.ndarray, source: str, against: str) -> np.ndarray:
    "Index into `keys` giving the order of `want`; a photo missing on either side is one error naming it."
    pos = pd.Index(keys)
    if not pos.is_unique: raise DataError(f'{source}: photo {pos[pos.duplicated()][0]} appears twice')
    idx = pos.get_indexer(want)
    if (idx < 0).any(): raise DataError(f'{source}: no prediction for {want[idx < 0][0]} of {against}')
    extra = np.setdiff1d(keys, want)
    if len(extra): raise DataError(f'{source}: {extra[0]} is not among the photos of {against}')
    return idx


def _read_submission(path: Path, answers: pd.DataFrame, answers_path: Path) -> Predictions:
    from .evaluate import read_labels
    sub = read_labels(path)
    idx = _align(sub.ImageID.to_numpy(), answers.ImageID.to_numpy(), str(path), str(answers_path))
    pred = sub.ans.to_numpy()[idx]
    probs = {}
    if probs_path(path).exists():
        z = read_submission_probs(path, LABEL_TASKS, f'predict writes it beside {path.name}; or move it away')
        order = _align(z['image_ids'].astype(str), answers.ImageID.to_numpy(), str(probs_path(path)), str(answers_path))
        probs = {t: z[t][order] for t in LABEL_TASKS}
    return Predictions(str(path), answers.ImageID.to_numpy(), answers.ans.to_numpy(), pred, probs)


def _read_valid(folder: Path) -> Predictions:
    "The {mask,gender,age}.valid.npz of a run or model folder: validation photos, true labels, probabilities."
    z = {t: read_valid(folder, t, 'train with a validation fold (not --full) to make it') for t in LABEL_TASKS}
    keys = z['mask']['files']
    probs = {}
    for t in LABEL_TASKS:
        order = _align(z[t]['files'], keys, str(folder / f'{t}.valid.npz'), str(folder / 'mask.valid.npz'))
        probs[t] = z[t]['probs'][order]
    return Predictions(str(folder), keys, z['mask']['labels'],
                       encode(*(probs[t].argmax(1) for t in LABEL_TASKS)), probs)


def read_side(items: list[Path], answers: Path | None = None) -> list[Predictions]:
    "Submissions (scored against `answers`) or run/model folders: one Predictions per item."
    if not items: raise UserError('give at least one submission or folder on each side')
    items = [recover_dir(p) for p in items]       # a model-folder swap that a kill interrupted is finished first
    folders = [p.is_dir() for p in items]
    if any(folders) and not all(folders):
        raise UserError(f'{", ".join(map(str, items))}: mix of folders and submissions; compare like with like')
    for p in items:
        if not p.exists(): raise UserError(f'{p}: no such submission or folder')
    if folders[0]: return [_read_valid(p) for p in items]
    if answers is None: raise UserError('submissions are scored against --answers CSV (ImageID,ans)')
    from .evaluate import read_labels
    truth = read_labels(answers)
    return [_read_submission(p, truth, answers) for p in items]


def _aligned(p: Predictions, ref: Predictions) -> Predictions:
    "`p` in the photo order of `ref`; the same photos with the same truth, or one error naming the difference."
    order = _align(p.keys, ref.keys, p.source, ref.source)
    if not (p.truth[order] == ref.truth).all():
        raise DataError(f'{p.source}: its true labels differ from those of {ref.source}: not the same photos '
                        f'or not the same corrections')
    return dataclasses.replace(p, keys=ref.keys, truth=ref.truth, pred=p.pred[order],
                               probs={t: v[order] for t, v in p.probs.items()})


def _units(keys: np.ndarray, from_folders: bool, persons_map: Path | None) -> tuple[np.ndarray, str]:
    """The resampling unit of each photo: its person. Validation photos: the person folder (one per train.csv
    row, so one per person); eval photos: the --persons-map; without one, each photo is its own unit."""
    if from_folders: return np.array([str(Path(k).parent) for k in keys]), 'persons (train.csv folders)'
    if persons_map is not None:
        from .evaluate import persons_of
        return persons_of(list(keys), persons_map), f'persons ({persons_map})'
    return keys.copy(), 'photos (no --persons-map: each photo resampled alone, which understates the interval)'


def _per_unit_confusions(unit_idx: np.ndarray, n_units: int, truth: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    "(units, k*k) counts of (true, predicted) pairs per unit: a draw's confusion matrix is a weighted sum of them."
    out = np.zeros((n_units, k * k))
    np.add.at(out, (unit_idx, truth * k + pred), 1)
    return out


def _macro_f1(conf: np.ndarray, k: int, all_labels: bool) -> np.ndarray:
    """Macro F1 of each confusion matrix (draws, k*k), as sklearn computes it with zero_division=0: over all k labels
    (the 18-class score, mcls.evaluate.score) or over the labels present in truth or prediction (task scores)."""
    c = conf.reshape(-1, k, k)
    tp = np.einsum('dii->di', c)
    rows, cols = c.sum(2), c.sum(1)
    denom = rows + cols
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    if all_labels: return f1.mean(1)
    present = denom > 0
    return f1.sum(1) / np.maximum(present.sum(1), 1)


def _task_labels(p: Predictions, metric: str) -> tuple[np.ndarray, np.ndarray]:
    if metric == 'f1_18': return p.truth, p.pred
    return task_labels(p.truth, metric), task_labels(p.pred, metric)


def _unit_table(p: Predictions, unit_idx, n_units, metric: str) -> np.ndarray:
    """Per-unit sums from which `metric` follows for any weighting of the units: (units, k*k) counts of (true,
    predicted) pairs for an F1, (units, 2) negative log-likelihood and photos for a log-loss."""
    if metric.startswith(LOWER_IS_BETTER):
        t = metric[len(LOWER_IS_BETTER):]
        y = task_labels(p.truth, t)
        nll = -np.log(np.clip(p.probs[t][np.arange(len(y)), y], 1e-15, None))
        return np.stack([np.bincount(unit_idx, nll, n_units), np.bincount(unit_idx, None, n_units)], 1)
    truth, pred = _task_labels(p, metric)
    return _per_unit_confusions(unit_idx, n_units, truth, pred, N_OUT[metric])


def _metric(table: np.ndarray, weights: np.ndarray, metric: str) -> np.ndarray:
    "`metric` for each row of unit weights (draws x units), from a `_unit_table`."
    s = weights @ table
    if metric.startswith(LOWER_IS_BETTER): return s[:, 0] / np.maximum(s[:, 1], 1)
    return _macro_f1(s, N_OUT[metric], metric == 'f1_18')


def check_draws(draws: int) -> int:
    "Draws bound time and memory: a number beyond MAX_DRAWS is refused before any work."
    if not MIN_DRAWS <= draws <= MAX_DRAWS: raise UserError(f'--draws {draws}: give {MIN_DRAWS}-{MAX_DRAWS:,}')
    return draws


def _check_resampling(n_photos: int, n_units: int, unit_name: str):
    "Refuse what a bootstrap cannot resample: an interval from no photos or from one person would look certain."
    if n_photos == 0: raise DataError('no photos to compare: both sides and the answers hold no rows')
    if n_units < 2:
        raise DataError(f'all {n_photos} photos belong to one unit of {unit_name}: a bootstrap needs at least two '
                        f'persons to resample; check the persons map')


def compare(a: list[Predictions], b: list[Predictions], persons_map: Path | None = None, draws: int = 2000,
            seed: int = 0, units: tuple[np.ndarray, str] | None = None) -> dict:
    """Paired bootstrap of B - A: each draw resamples units (persons) with replacement, the same units for both
    sides, and each side's runs with replacement (runs of one recipe with other seeds are pooled); `units` (an id
    per photo of a[0], and their name) overrides how units are found. Returns, per metric: a, b (means over runs on
    all photos), diff = b - a, its 95% percentile interval (low, high) and p_b_better, the share of draws where B is
    better (higher F1, lower log-loss); plus `draws` of the differences.
    Draws are made in chunks, so memory grows with the units, not with the draws."""
    keys = a[0].keys
    a, b = ([_aligned(p, a[0]) for p in side] for side in (a, b))
    units, unit_name = units or _units(keys, Path(a[0].source).is_dir(), persons_map)
    names, unit_idx = np.unique(units, return_inverse=True)
    check_draws(draws)
    _check_resampling(len(keys), len(names), unit_name)
    metrics = [*METRICS, *(f'{LOWER_IS_BETTER}{t}' for t in LABEL_TASKS if all(t in p.probs for p in (*a, *b)))]
    tables = {m: ([_unit_table(p, unit_idx, len(names), m) for p in a],
                  [_unit_table(p, unit_idx, len(names), m) for p in b])
              for m in metrics}
    rng = np.random.default_rng(seed)
    diffs = {m: [] for m in metrics}
    chunk = max(1, CHUNK_CELLS // len(names))
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        weights = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=n).astype(float)
        pick_a, pick_b = rng.integers(0, len(a), (n, len(a))), rng.integers(0, len(b), (n, len(b)))
        rows = np.arange(n)[:, None]
        for m, (ta, tb) in tables.items():
            da, db = (np.stack([_metric(t, weights, m) for t in side]) for side in (ta, tb))   # runs x draws
            diffs[m].append(db[pick_b, rows].mean(1) - da[pick_a, rows].mean(1))
    out = {'units': unit_name, 'n_units': len(names), 'n_photos': len(keys), 'draws': draws, 'seed': seed,
           'a_runs': [p.source for p in a], 'b_runs': [p.source for p in b], 'metrics': {}, 'differences': {}}
    ones = np.ones((1, len(names)))
    for m, (ta, tb) in tables.items():
        fa, fb = ([float(_metric(t, ones, m)[0]) for t in side] for side in (ta, tb))
        diff = np.concatenate(diffs[m])
        better = diff < 0 if m.startswith(LOWER_IS_BETTER) else diff > 0
        low, high = np.percentile(diff, [2.5, 97.5])
        out['metrics'][m] = {'a': float(np.mean(fa)), 'b': float(np.mean(fb)), 'diff': float(np.mean(fb) - np.mean(fa)),
                             'low': float(low), 'high': float(high), 'p_b_better': float(better.mean())}
        out['differences'][m] = diff
    return out


def plot_differences(result: dict, dest: Path | str) -> Path:
    "One histogram per metric of the bootstrap differences B - A, with 0 and the 95% interval marked."
    from .plots import pyplot, save_figure
    ms = list(result['metrics'])
    fig, axes = pyplot().subplots(1, len(ms), figsize=(3.2 * len(ms), 2.8), squeeze=False)
    for ax, m in zip(axes[0], ms):
        r = result['metrics'][m]
        ax.hist(result['differences'][m], bins=40, color='tab:blue', alpha=0.8)
        ax.axvline(0, color='black', lw=1)
        for v in (r['low'], r['high']): ax.axvline(v, color='tab:red', ls='--', lw=1)
        ax.set_title(f'{m}: B-A {r["diff"]:+.4f}\nP(B better) {r["p_b_better"]:.2f}', fontsize=9)
    fig.suptitle(f'paired bootstrap over {result["n_units"]} {result["units"].split(" (")[0]}, {result["draws"]} draws',
                 fontsize=9)
    return save_figure(fig, dest)
