"""Label maths: pure functions between (mask, gender, age group) and the 18-class label."""
from __future__ import annotations

import numpy as np

__all__ = ['MASK_STEMS', 'MASK_NAMES', 'GENDERS', 'AGE_NAMES', 'SCORE_BOUNDARY', 'N_CLASSES', 'LABEL_TASKS',
           'VALUE_NAMES', 'TASK_CLASSES', 'TASK_SLICES', 'age_group', 'encode', 'decode', 'task_labels', 'split_tasks',
           'class_name']

# photo stem -> mask state: wear 0, incorrect 1, not wear 2
MASK_STEMS = {'mask1': 0, 'mask2': 0, 'mask3': 0, 'mask4': 0, 'mask5': 0, 'incorrect_mask': 1, 'normal': 2}
MASK_NAMES = ('wear', 'incorrect', 'not_wear')
GENDERS = ('male', 'female')
AGE_NAMES = ('<30', '30-59', '60+')
SCORE_BOUNDARY = 60   # the competition's 60+ boundary: every score uses it, whatever the training boundary
N_CLASSES = 18
# The 18-class layout, defined here alone: the tasks in the order of encode()'s arguments and decode()'s results,
# with their class counts; per-task probabilities side by side (a joint learner's heads) follow the same order.
LABEL_TASKS = ('mask', 'gender', 'age')
VALUE_NAMES = {'mask': MASK_NAMES, 'gender': GENDERS, 'age': AGE_NAMES}     # each task's class names, in order
TASK_CLASSES = {t: len(names) for t, names in VALUE_NAMES.items()}
TASK_SLICES = {t: slice(sum(TASK_CLASSES[u] for u in LABEL_TASKS[:i]),
                        sum(TASK_CLASSES[u] for u in LABEL_TASKS[:i + 1]))
               for i, t in enumerate(LABEL_TASKS)}


def _array(x):
    "Tensors stay tensors (the joint learner's loss and metrics), anything else becomes a NumPy array."
    return x if any(c.__module__.startswith('torch') for c in type(x).__mro__) else np.asarray(x)


def age_group(age, boundary: int = SCORE_BOUNDARY):
    "Age(s) -> 0 (<30), 1 (30..boundary-1), 2 (>=boundary). Scalars give an int, arrays an array."
    if not 30 < boundary: raise ValueError(f'age boundary must be above 30, got {boundary}')
    a = np.asarray(age)
    g = np.where(a < 30, 0, np.where(a < boundary, 1, 2))
    return int(g) if g.ndim == 0 else g


def encode(mask, gender, age_grp):
    "(mask 0-2, gender 0-1, age group 0-2) -> class 0-17 = mask*6 + gender*3 + age. Works on arrays and tensors."
    out = _array(mask) * 6 + _array(gender) * 3 + _array(age_grp)
    return int(out) if out.ndim == 0 else out


def decode(label):
    "Class 0-17 -> (mask, gender, age group). Works on arrays and tensors."
    lab = _array(label)
    if ((lab < 0) | (lab >= N_CLASSES)).any(): raise ValueError(f'labels must be 0-17, got {label}')
    out = (lab // 6, (lab // 3) % 2, lab % 3)
    return tuple(int(v) for v in out) if lab.ndim == 0 else out


def task_labels(label, task: str):
    "The `task` part (mask, gender or age group) of 18-class labels."
    return decode(label)[LABEL_TASKS.index(task)]


def split_tasks(probs) -> dict:
    "Per-task probabilities side by side (n, 8) -> {task: (n, classes)} in LABEL_TASKS order."
    return {t: probs[:, TASK_SLICES[t]] for t in LABEL_TASKS}


def class_name(label: int) -> str:
    m, g, a = decode(label)
    return f'{MASK_NAMES[m]}/{GENDERS[g]}/{AGE_NAMES[a]}'
