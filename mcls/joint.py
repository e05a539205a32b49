"""One backbone, three heads: mask (3), gender (2) and age (3 groups, ordinal year thresholds, or a distribution over
years) from one forward
pass. fastai's tta, MixUp, CutMix and metrics want one logits tensor and one target, so the model returns the heads
side by side, the target is one integer per photo, and the loss, activation and metrics split them."""
from __future__ import annotations

from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from fastai.vision.all import AccumMetric, DisplayedTransform, TensorCategory, TitledStr
from sklearn.metrics import f1_score

from .labels import (LABEL_TASKS, MASK_NAMES, N_CLASSES, SCORE_BOUNDARY, TASK_CLASSES, TASK_SLICES, class_name, decode,
                     encode, split_tasks, task_labels)

__all__ = ['AGE_THRESHOLDS', 'AGE_YEARS', 'AGE_SIGMA', 'HEADS', 'YEARS_SPAN', 'n_logits', 'encode_target',
           'decode_target', 'target_persons', 'consistency_term', 'group_probs', 'JointTarget', 'JointLoss', 'joint_f1',
           'joint_metrics', 'split_probs']

AGE_THRESHOLDS = tuple(range(18, 76, 2))   # ordinal head: one logit for "age >= t" per threshold (30 and 60 included)
AGE_YEARS = tuple(range(18, 76))           # dist head: one logit per year; ages outside are clipped (groups kept)
AGE_SIGMA = 3.0                            # dist head: the soft target is a Gaussian of this many years
HEADS = {**TASK_SLICES, 'age': slice(TASK_SLICES['age'].start, None)}   # age: 3 groups, thresholds or years
AGE_LOGITS = {'groups': TASK_CLASSES['age'], 'ordinal': len(AGE_THRESHOLDS), 'dist': len(AGE_YEARS)}


def n_logits(age_head: str) -> int:
    return HEADS['age'].start + AGE_LOGITS[age_head]


def year_targets(years: torch.Tensor, sigma: float = AGE_SIGMA) -> torch.Tensor:
    "Exact ages -> soft targets over AGE_YEARS: a Gaussian around each (clipped) age, summing to 1."
    grid = torch.tensor(AGE_YEARS, dtype=torch.float, device=years.device)
    y = years.float().clamp(grid[0], grid[-1])[:, None]
    return F.softmax(-0.5 * ((grid[None] - y) / sigma) ** 2, 1)


UNMASKED = MASK_NAMES.index('not_wear')   # the photo whose face the mask does not hide
YEARS_SPAN = 128     # encoded years are below this; a person's index, where encoded, sits above them


def encode_target(mask, gender, age_grp, years, person=None):
    """One integer per photo: 18-class label (age group as trained) + 18 x exact age (+ 18 x 128 x the person's index
    within the table, for person-consistent training). Works on arrays."""
    t = np.asarray(years) * N_CLASSES + encode(mask, gender, age_grp)
    return t if person is None else t + np.asarray(person) * N_CLASSES * YEARS_SPAN


def decode_target(t: torch.Tensor):
    "Encoded target tensor -> (mask, gender, age group, years)."
    return (*decode(t % N_CLASSES), (t // N_CLASSES) % YEARS_SPAN)


def target_persons(t: torch.Tensor) -> torch.Tensor:
    "The person index an encoded target carries (0 where none was encoded)."
    return t // (N_CLASSES * YEARS_SPAN)


def consistency_term(log_probs: list[torch.Tensor], persons: torch.Tensor,
                     teachers: torch.Tensor | None = None) -> torch.Tensor:
    """Per photo, KL(person target || photo) of the gender and age-group distributions, the target held fixed: age
    and gender do not change with the mask, so each photo is pulled towards what its person's photos in the batch say.
    The target is the mean of the person's photos, or with `teachers` (one bool per photo) of the person's teacher
    photos alone (say the unmasked ones: distillation from the face the mask does not hide). Photos without another
    photo of their person in the batch (without a teacher, with `teachers`) add 0."""
    _, inverse, counts = torch.unique(persons, return_inverse=True, return_counts=True)
    weight = torch.ones(len(persons), device=persons.device) if teachers is None else teachers.float()
    taught = torch.zeros(len(counts), device=persons.device).index_add_(0, inverse, weight)
    out = torch.zeros(len(persons), device=persons.device)
    for log_p in log_probs:       # one (photos, classes) tensor of log-probabilities per task
        total = torch.zeros(len(counts), log_p.shape[1], device=log_p.device)
        total.index_add_(0, inverse, log_p.exp() * weight[:, None])
        target = (total / taught.clamp_min(1)[:, None]).detach()[inverse]
        out = out + (target * (target.clamp_min(1e-8).log() - log_p)).sum(1)
    return out * ((counts[inverse] > 1) & (taught[inverse] > 0))


def group_probs(age_logits: torch.Tensor, age_head: str, boundary: int = SCORE_BOUNDARY) -> torch.Tensor:
    """Age logits -> probabilities of <30, 30..boundary-1, >=boundary. Ordinal: read off the year thresholds
    (P(>=60) capped by P(>=30), so the three stay a distribution); dist: the years' probabilities summed per group."""
    if age_head == 'groups': return F.softmax(age_logits, -1)
    if age_head == 'dist':
        p, years = F.softmax(age_logits, -1), torch.tensor(AGE_YEARS, device=age_logits.device)
        young, old = p[:, years < 30].sum(1), p[:, years >= boundary].sum(1)
        return torch.stack([young, 1 - young - old, old], 1).clamp_min(0)
    p = torch.sigmoid(age_logits)
    p30, pold = p[:, AGE_THRESHOLDS.index(30)], p[:, AGE_THRESHOLDS.index(boundary)]
    pold = torch.minimum(pold, p30)
    return torch.stack([1 - p30, p30 - pold, pold], 1)


class JointTarget(DisplayedTransform):
    "The encoded integer target as a tensor (no vocab: the loss and metrics decode it); shown as its class name."
    def encodes(self, o) -> TensorCategory: return TensorCategory(int(o))
    def decodes(self, o) -> TitledStr: return TitledStr(class_name(int(o) % N_CLASSES))


class JointLoss:
    """Weighted sum of the three tasks' losses on one logits tensor: cross-entropy for mask and gender, focal or
    cross-entropy (both with optional label smoothing) over age groups, binary cross-entropy per year threshold
    (ordinal), or cross-entropy against a Gaussian over years (dist: label-distribution learning)."""
    y_int = True      # MixUp / CutMix mix the losses of two integer targets

    def __init__(self,
                 task_weights=(1.0, 1.0, 1.0),   # mask, gender, age
                 age_head: str = 'groups',       # groups | ordinal | dist
                 age_loss: str = 'focal',        # focal | ce (groups head)
                 gamma: float = 2.0,             # focal focusing parameter
                 label_smoothing: float = 0.0,
                 age_weights=None,               # per-group weights of the age loss (groups head)
                 boundary: int = SCORE_BOUNDARY, # the >= group read from the ordinal and dist heads
                 reduction: str = 'mean',
                 consistency: float = 0.0,       # weight of consistency_term (targets must carry persons)
                 consistency_target: str = 'mean'):   # mean | unmasked: whose distributions the term pulls to
        self.task_weights, self.age_head, self.age_loss, self.gamma = tuple(task_weights), age_head, age_loss, gamma
        self.consistency, self.consistency_target = consistency, consistency_target
        self.label_smoothing, self.boundary, self.reduction = label_smoothing, boundary, reduction
        self.age_weights = None if age_weights is None else torch.as_tensor(age_weights, dtype=torch.float)
        self.thresholds = torch.tensor(AGE_THRESHOLDS)

    def _age(self, logits, grp, years):
        if self.age_head == 'ordinal':
            above = (years[:, None] >= self.thresholds.to(years.device)[None]).float()
            return F.binary_cross_entropy_with_logits(logits, above, reduction='none').mean(1)
        if self.age_head == 'dist': return F.cross_entropy(logits, year_targets(years), reduction='none')
        w = None if self.age_weights is None else self.age_weights.to(logits.device)
        ce = F.cross_entropy(logits, grp, weight=w, reduction='none', label_smoothing=self.label_smoothing)
        if self.age_loss != 'focal': return ce
        p_t = torch.exp(-F.cross_entropy(logits, grp, reduction='none'))   # focal term from the plain probability
        return (1 - p_t) ** self.gamma * ce

    def __call__(self, out, targ, **kwargs):
        out = out.float()
        m, g, a, years = decode_target(targ.long())
        ls = self.label_smoothing
        wm, wg, wa = self.task_weights
        loss = (wm * F.cross_entropy(out[:, HEADS['mask']], m, reduction='none', label_smoothing=ls)
                + wg * F.cross_entropy(out[:, HEADS['gender']], g, reduction='none', label_smoothing=ls)
                + wa * self._age(out[:, HEADS['age']], a, years))
        if getattr(self, 'consistency', 0):        # learners exported before the term existed have no attribute
            age = group_probs(out[:, HEADS['age']], self.age_head, self.boundary).clamp_min(1e-8).log()
            gender = F.log_softmax(out[:, HEADS['gender']], -1)
            teachers = m == UNMASKED if getattr(self, 'consistency_target', 'mean') == 'unmasked' else None
            loss = loss + self.consistency * consistency_term([gender, age], target_persons(targ.long()), teachers)
        red = kwargs.get('reduction', self.reduction)
        return loss.mean() if red == 'mean' else loss.sum() if red == 'sum' else loss

    def activation(self, out) -> torch.Tensor:
        "Per-task probabilities side by side: mask 3 | gender 2 | age groups 3."
        out = out.float()
        return torch.cat([F.softmax(out[:, HEADS['mask']], -1), F.softmax(out[:, HEADS['gender']], -1),
                          group_probs(out[:, HEADS['age']], self.age_head, self.boundary)], 1)

    def decodes(self, probs) -> torch.Tensor:
        "Probabilities from `activation` -> the 18-class label."
        return encode(*(p.argmax(1) for p in split_tasks(probs).values()))


def split_probs(probs) -> dict[str, np.ndarray]:
    "Joint probabilities (n, 8) -> {'mask': (n, 3), 'gender': (n, 2), 'age': (n, 3)}."
    return split_tasks(np.asarray(probs))


def joint_f1(preds, targs, loss: JointLoss, part: str = 'all') -> float:
    """Macro F1 of one task (or of the 18 classes) from raw logits. Validation targets carry the true age
    groups, so the score is comparable whatever the training boundary."""
    pred = loss.decodes(loss.activation(preds))
    truth = targs.long() % N_CLASSES
    if part != 'all': pred, truth = task_labels(pred, part), task_labels(truth, part)
    return float(f1_score(truth.numpy(), pred.numpy(), average='macro'))


def joint_metrics(loss: JointLoss) -> list:
    "18-class macro F1 (named f1_score: the checkpoint monitor) and each task's macro F1."
    return [AccumMetric(partial(joint_f1, loss=loss, part=p), flatten=False,
                        name='f1_score' if p == 'all' else f'{p}_f1') for p in ('all', *LABEL_TASKS)]
