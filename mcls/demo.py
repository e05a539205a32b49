"""The embedded demo: the whole workflow on generated data, with no downloads."""
from __future__ import annotations

import time
from pathlib import Path

from .evaluate import Scores, evaluate_files
from .predict import predict_eval
from .settings import TASKS, load_settings
from .synth import make_dataset
from .train import train_task, training_table

__all__ = ['demo_overrides', 'run_demo']


def demo_overrides(root: Path, epochs: int = 8) -> dict[str, str]:
    "Settings for a tiny, randomly initialised model on small synthetic photos, all under `root`."
    ov = {'paths.data': root / 'data', 'paths.cache': root / 'crops', 'paths.runs': root / 'runs',
          'paths.models': root / 'models', 'paths.reports': root / 'reports', 'crop.size': 80,
          'train.arch': 'test_efficientnet', 'train.pretrained': 'false', 'train.weights': '', 'train.size': 64,
          'train.batch': 32, 'predict.tta_passes': 2, 'predict.out': root / 'submission.csv'}
    ov.update({f'{t}.epochs': epochs for t in TASKS})
    ov.update({f'{t}.lr': '3e-3' for t in TASKS})     # a tiny model from scratch wants a larger step than fine-tuning
    return {k: str(v) for k, v in ov.items()}


def run_demo(root: Path | str = 'data/demo', persons: int = 100, epochs: int = 8, console=None) -> Scores:
    "synth -> crop -> train mask, age, gender on fold 0 -> predict with TTA -> evaluate against answers.csv."
    say = console.print if console is not None else print
    root = Path(root)
    t0 = time.perf_counter()
    info = make_dataset(root / 'data', persons=persons, eval_persons=max(persons // 4, 3), seed=0)
    say(f'[1/4] synthetic data: {info.persons} persons, {info.train_images} training / {info.eval_images} eval photos')
    s = load_settings(overrides=demo_overrides(root, epochs))
    table = training_table(s)
    say(f'[2/4] cropped {len(table)} photos into {s.paths.cache}')
    model_dir = Path(s.paths.models) / 'fold0'
    for t in TASKS:
        r = train_task(table, s, t, 0, export_dir=model_dir, workers=0)
        say(f'[3/4] trained {t}: valid macro F1 {r.valid_f1:.3f} ({r.seconds:.0f} s, run {r.run_dir})')
    predict_eval(s, [model_dir], s.predict.out, tta=True)
    scores = evaluate_files(s.predict.out, root / 'data' / 'eval' / 'answers.csv')
    say(f'[4/4] predicted with TTA -> {s.predict.out}; whole demo {time.perf_counter() - t0:.0f} s')
    return scores
