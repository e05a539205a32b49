"""The most person grouping can give: each eval photo's learner probabilities (saved by a `bench.quality` run)
combined per person the way `--persons auto` combines a group (mean gender and age log-probabilities, mask states
5/1/1 where that costs at most `persons_margin` nats), with the true persons of the build's `build_meta.csv` as the
groups. No training, no prediction: it reads what the protocol run left.

    python -m bench.studies.persons_oracle --work runs/quality --seeds 777 1 --data data/mf600

Per seed and eval copy (eval, degraded, jittered) it prints F1_18 per photo, with the groups `--persons auto`
found (where that copy was predicted with them) and with the true persons. Perfect grouping is an upper bound for
what finding persons can add to these learners' answers (offsets aside); build_meta.csv is read here only.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mcls.evaluate import persons_of, read_labels
from mcls.persons import consistent_labels
from mcls.tune import apply_offsets
from mcls.settings import load_settings
from bench.common import scores, work_parser
from bench.studies.seed_ensemble import labels_of
from mcls.labels import LABEL_TASKS


def log_probs(z) -> dict[str, np.ndarray]:
    return {t: apply_offsets(z[t]) for t in LABEL_TASKS}     # as predict scores a photo without tuned offsets


def copy_scores(work: Path, seed: int, copy: str, root: Path, margin: float) -> dict | None:
    """Per photo, found groups and true persons for one seed's predictions of one copy (None: not predicted, or no
    persons map)."""
    plain = work / f'sub_{seed}_{copy}.csv.probs.npz'
    if not plain.exists() or not (root / 'build_meta.csv').exists(): return None
    z = np.load(plain)
    ids = list(z['image_ids'])
    y = read_labels(root / 'eval' / 'answers.csv').set_index('ImageID').loc[ids, 'ans'].to_numpy()
    persons = persons_of(ids, root / 'build_meta.csv')
    true_groups = np.unique(persons, return_inverse=True)[1]
    out = {'per_photo': scores(labels_of(z), y),
           'true_persons': scores(consistent_labels(log_probs(z), true_groups, margin)[0], y)}
    found = work / f'sub_{seed}_{copy}_persons.csv.probs.npz'
    if found.exists():
        g = np.load(found)
        if list(g['image_ids']) != ids: raise SystemExit(f'{found}: not the photos of {plain}')
        out['found_groups'] = scores(consistent_labels(log_probs(z), g['groups'], margin)[0], y)
    return out


def main(argv=None):
    ap = work_parser(__doc__, 'the build: eval/answers.csv and build_meta.csv')
    ap.add_argument('--margin', type=float, help='nats (default: [predict] persons_margin of settings.ini)')
    a = ap.parse_args(argv)
    margin = a.margin if a.margin is not None else load_settings().predict.persons_margin
    roots = {'eval': a.data, 'degraded': a.work / 'degraded', 'jittered': a.work / 'jittered'}
    res = {'work': str(a.work), 'seeds': a.seeds, 'margin': margin, 'copies': {}}
    for copy, root in roots.items():
        for sd in a.seeds:
            sc = copy_scores(a.work, sd, copy, root, margin)
            if sc is None: continue
            res['copies'].setdefault(copy, {})[str(sd)] = sc
            row = '  '.join(f"{k} {v['f1_18']:.4f} (gender {v['gender']:.3f}, age {v['age']:.3f}, mask "
                            f"{v['mask']:.3f})" for k, v in sc.items())
            print(f'{copy:9s} seed {sd:<5d} {row}')
    if a.out: a.out.write_text(json.dumps(res, indent=1))
    return res


if __name__ == '__main__':
    main()
