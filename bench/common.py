"""What the benchmarks share: where the offline weights and data lie, the result report, loading a build with its
crops and folds, and scores through mcls.evaluate."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')

from mcls.atomic import write_text_atomic  # noqa: E402
from mcls.crop import attach_crops  # noqa: E402
from mcls.dataset import load_eval, load_train  # noqa: E402
from mcls.evaluate import score  # noqa: E402
from mcls.folds import assign_folds  # noqa: E402
from mcls.labels import LABEL_TASKS  # noqa: E402

__all__ = ['ROOT', 'SHARED', 'WEIGHTS', 'IDENTITY', 'RESULTS', 'Report', 'gpu_profile', 'scaled_lr', 'scores',
           'load_crop_fold', 'work_parser']

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'
WEIGHTS = SHARED / 'weights' / 'tf_efficientnet_lite0.in1k.safetensors'     # the only ImageNet weights offline
IDENTITY = {'predict.identity_weights': str(SHARED / 'weights' / 'face_recognition_sface_2021dec_int8bq.onnx'),
            'predict.detector_weights': str(SHARED / 'weights' / 'face_detection_yunet_2023mar_int8bq.onnx')}
RESULTS = ROOT / 'bench' / 'results'


class Report:
    """A result JSON, rewritten atomically after every stage (a run cut short keeps what it finished). `extra()`,
    when given, adds its keys at every stage (e.g. peak memory)."""

    def __init__(self, path: Path, extra=None, **head):
        self.path, self.extra, self.data = Path(path), extra, {**head, 'stages': {}}

    def stage(self, name: str, seconds: float, **values):
        self.data['stages'][name] = {'seconds': round(seconds, 2), **values}
        if self.extra is not None: self.data.update(self.extra())
        self.save()

    def save(self): write_text_atomic(self.path, json.dumps(self.data, indent=1, default=float))


def gpu_profile(learner: str = 'joint'):
    "The GPU profile's settings of one learner (configs/gpu.ini over the packaged recipe)."
    from mcls.settings import GPU_PROFILE, load_settings
    return load_settings(ROOT / GPU_PROFILE, cwd=ROOT).tasks[learner]


def scaled_lr(batch: int, ranks: int = 1, learner: str = 'joint') -> float:
    """docs/scaling.md's rule for carrying the GPU profile's peak rate to another effective batch (batch per step x
    ranks): linearly with it (Goyal et al. 2017; one-cycle's warm-up is the warm-up they pair it with)."""
    ts = gpu_profile(learner)
    return ts.lr * batch * ranks / ts.batch


def scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    "18-class macro F1 and each task's (mcls.evaluate.score), and their mean: steadier than F1_18 on 500 photos."
    sc = score(truth, pred)
    return {'f1_18': sc.f1, **sc.task_f1, 'mean_task': float(np.mean([sc.task_f1[t] for t in LABEL_TASKS]))}


def load_crop_fold(s, data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    "A build's training photos (with crops and the settings' person-aware folds) and eval photos (with crops)."
    table, _ = attach_crops(load_train(data), s.crop, s.paths.cache, progress=False)
    eval_df, _ = attach_crops(load_eval(data).assign(split='eval'), s.crop, s.paths.cache, progress=False)
    table['fold'] = assign_folds(table, s.split.folds, s.split.by, s.split.seed)
    return table, eval_df


def work_parser(doc: str, data_help: str):
    "The arguments of a study that reads what a bench.quality run left: --work, --seeds, --data, --out."
    import argparse
    ap = argparse.ArgumentParser(description=doc.split('\n\n')[0])
    ap.add_argument('--work', type=Path, required=True, help='a bench.quality --work folder')
    ap.add_argument('--seeds', type=int, nargs='+', required=True)
    ap.add_argument('--data', type=Path, required=True, help=data_help)
    ap.add_argument('--out', type=Path, help='result JSON')
    return ap
