"""What averaging the protocol's seeds would give: the probabilities each seed's learner saved in a
`bench.quality` work folder (fold-0 validation files and the eval / degraded / jittered predictions), averaged
over seeds, scored as the protocol scores them. No training: it reads what the protocol run left.

    python -m bench.studies.seed_ensemble --work runs/quality --seeds 777 1 --data data/mf600

It prints each seed alone and their mean (a recipe that trains one learner per seed and averages them, at
n times the training and prediction cost); fold-0 figures of single seeds are of their best epoch, chosen on fold 0.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mcls.evaluate import read_labels
from mcls.labels import LABEL_TASKS, encode
from bench.common import scores, work_parser



def labels_of(probs: dict) -> np.ndarray:
    return encode(*(probs[t].argmax(1) for t in LABEL_TASKS))


def fold0(work: Path, seeds: list[int]) -> dict:
    "Fold-0 scores per seed and of the seeds' mean probabilities (the validation files the learners saved)."
    z = {sd: {t: np.load(work / 'models' / f'seed{sd}' / f'{t}.valid.npz') for t in LABEL_TASKS} for sd in seeds}
    ref = z[seeds[0]]['mask']
    if any((z[sd][t]['files'] != ref['files']).any() for sd in seeds for t in LABEL_TASKS):
        raise SystemExit('the seeds validated on different photos: not one protocol run')
    y = ref['labels']
    out = {str(sd): scores(labels_of({t: z[sd][t]['probs'] for t in LABEL_TASKS}), y) for sd in seeds}
    out['mean'] = scores(labels_of({t: np.mean([z[sd][t]['probs'] for sd in seeds], 0) for t in LABEL_TASKS}), y)
    return out


def copy_scores(work: Path, seeds: list[int], copy: str, truth) -> dict:
    "Scores of one predicted copy (eval, degraded, jittered) per seed and of the seeds' mean."
    z = {sd: np.load(work / f'sub_{sd}_{copy}.csv.probs.npz') for sd in seeds}
    ids = z[seeds[0]]['image_ids']
    y = truth.loc[ids, 'ans'].to_numpy()
    out = {str(sd): scores(labels_of({t: z[sd][t] for t in LABEL_TASKS}), y) for sd in seeds}
    out['mean'] = scores(labels_of({t: np.mean([z[sd][t] for sd in seeds], 0) for t in LABEL_TASKS}), y)
    return out


def main(argv=None):
    ap = work_parser(__doc__, 'the build whose eval/answers.csv scores the copies')
    a = ap.parse_args(argv)
    truth = read_labels(a.data / 'eval' / 'answers.csv').set_index('ImageID')
    res = {'work': str(a.work), 'seeds': a.seeds, 'fold0': fold0(a.work, a.seeds)}
    for copy in ('eval', 'degraded', 'jittered'): res[copy] = copy_scores(a.work, a.seeds, copy, truth)
    for part, rows in res.items():
        if not isinstance(rows, dict): continue
        for who, sc in rows.items():
            print(f"{part:9s} {who:5s} F1_18 {sc['f1_18']:.4f}  mask {sc['mask']:.3f}  gender {sc['gender']:.3f}  "
                  f"age {sc['age']:.3f}  mean task {sc['mean_task']:.3f}")
    if a.out: a.out.write_text(json.dumps(res, indent=1))
    return res


if __name__ == '__main__':
    main()
