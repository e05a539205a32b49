"""Person-balanced epochs (`[train] photos_per_person`): each epoch draws k photos of every training person anew,
keeping the mask states in their places, instead of showing all 7 photos (5 of which differ only in the mask).
Modelled on fastai's WeightedDL / PartialDL: a TfmdDL whose `get_idxs` draws the epoch. The draw depends only on
the seed and the epoch number, so a resumed run draws what an uninterrupted one would, and the ranks of a job share
rank 0's draw (fastai's DistributedDL broadcasts it) and take disjoint parts of it."""
from __future__ import annotations

import numpy as np
from fastai.vision.all import Callback, TfmdDL

__all__ = ['person_draws', 'PersonDL', 'DrawEpoch']

WORN, INCORRECT, NORMAL = 0, 1, 2     # mask states (mcls.labels.MASK_STEMS)


def person_draws(persons: np.ndarray, states: np.ndarray, k: int, rng: np.random.Generator,
                 repeats: np.ndarray | None = None, together: bool = False) -> np.ndarray:
    """Row indices of one epoch, in a random order: for each person, `repeats` (default 1) independent draws of `k`
    of their photos. k >= 3: the incorrect and the normal photo once each and k - 2 worn photos (no photo twice
    within a draw); k = 1 or 2: photos of the person's at random, so the mask states keep their 5:1:1 share on
    average. A person lacking a state or photos gets what they have. `together`: each draw's photos stay next to
    each other (the draws in a random order), so they share a batch unless a batch ends among them."""
    out = []
    repeats = np.ones(len(persons), int) if repeats is None else np.asarray(repeats)
    for rows in _rows_by_person(persons):
        st = states[rows]
        for _ in range(int(repeats[rows[0]])):
            if k >= 3:
                pick = [rng.permutation(rows[st == s])[:n] for s, n in ((INCORRECT, 1), (NORMAL, 1), (WORN, k - 2))]
                chosen = np.concatenate(pick)
                short = k - len(chosen)           # a missing state: made up from the person's other photos
                if short > 0: chosen = np.concatenate([chosen, rng.permutation(np.setdiff1d(rows, chosen))[:short]])
            else:
                chosen = rng.permutation(rows)[:k]
            out.append(chosen)
    if not out: return np.zeros(0, int)
    if together: return np.concatenate([out[i] for i in rng.permutation(len(out))])
    return rng.permutation(np.concatenate(out))


def _rows_by_person(persons: np.ndarray) -> list[np.ndarray]:
    "Each person's row indices (ascending), persons in order of first appearance."
    _, first, inverse, counts = np.unique(persons, return_index=True, return_inverse=True, return_counts=True)
    groups = np.split(np.argsort(inverse, kind='stable'), np.cumsum(counts)[:-1])
    return [groups[i] for i in np.argsort(first)]


class PersonDL(TfmdDL):
    """A training DataLoader whose every epoch is `person_draws` of its rows: k photos a person (60+ persons
    `repeats` times, from old_weight), drawn from (seed, epoch). `epoch` is set by the DrawEpoch callback."""
    def __init__(self, dataset=None, bs=None, persons=None, states=None, k: int = 3, seed: int = 0, repeats=None,
                 together: bool = False, **kwargs):
        super().__init__(dataset=dataset, bs=bs, **kwargs)
        self.persons, self.states, self.k, self.seed = np.asarray(persons), np.asarray(states), k, seed
        self.repeats, self.together, self.epoch = repeats, together, 0
        self.drawn = len(self._draw(0))          # photos an epoch: the same every epoch

    def _draw(self, epoch: int) -> np.ndarray:
        return person_draws(self.persons, self.states, self.k, np.random.default_rng([self.seed, epoch]), self.repeats,
                            self.together)

    def new(self, dataset=None, cls=None, **kwargs):
        "A copy over the same photos draws as this one; over other photos (export's empty copy, test photos) plain."
        if dataset is None or len(dataset) == len(self.persons):
            kwargs = dict(persons=self.persons, states=self.states, k=self.k, seed=self.seed, repeats=self.repeats,
                          together=self.together, **kwargs)
        else:
            cls = cls or TfmdDL
        return super().new(dataset, cls, **kwargs)

    def get_idxs(self):
        if not self.shuffle: return super().get_idxs()       # a copy made for prediction: every photo, in order
        return [int(i) for i in self._draw(self.epoch)]

    def __len__(self):
        if not self.shuffle: return super().__len__()
        return self.drawn // self.bs + (0 if self.drop_last or self.drawn % self.bs == 0 else 1)


class DrawEpoch(Callback):
    "Tells a PersonDL which epoch it draws (resumed runs start later), for the fit call only."
    order = -20

    def before_epoch(self):
        dl = self.dls.train
        dl = getattr(dl, 'dl', dl)          # inside fastai's DistributedDL
        if isinstance(dl, PersonDL): dl.epoch = self.epoch
