"""The embedded demo: the whole workflow on generated data, with no downloads; and the tiny settings that the
demo, the tests and the benchmarks' quick forms share."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from .evaluate import Scores, evaluate_files
from .predict import predict_eval
from .settings import LEARNERS, load_settings
from .synth import make_dataset
from .settings import learners_for
from .train import train_learners, training_table

__all__ = ['TINY', 'tiny_overrides', 'run_demo']

# a tiny randomly initialised timm model on small photos: seconds per epoch on a CPU
TINY = {'train.arch': 'test_efficientnet', 'train.pretrained': 'false', 'train.weights': '', 'train.size': '64',
        'crop.size': '64', 'train.batch': '16', 'predict.tta_passes': '2'}


def tiny_overrides(root: Path | str, epochs: int = 1, **extra) -> dict[str, str]:
    "TINY with every path under `root` and `epochs` for every learner; `extra` ('section.key': value) wins."
    root = Path(root)
    ov = {'paths.data': root / 'data', 'paths.cache': root / 'crops', 'paths.runs': root / 'runs',
          'paths.models': root / 'models', 'paths.reports': root / 'reports', 'predict.out': root / 'submission.csv',
          **TINY, **{f'{t}.{k}': epochs for t in LEARNERS for k in ('epochs', 'full_epochs')}, **extra}
    return {k: str(v) for k, v in ov.items()}


def run_demo(root: Path | str = 'data/demo', persons: int = 100, epochs: int = 8, console=None) -> Scores:
    "synth -> crop -> train ([train] mode: three tasks or joint) on fold 0 -> predict with TTA -> evaluate."
    say = console.print if console is not None else print
    root = Path(root)
    t0 = time.perf_counter()
    info = make_dataset(root / 'data', persons=persons, eval_persons=max(persons // 4, 3), seed=0)
    say(f'[1/4] synthetic data: {info.persons} persons, {info.train_images} training / {info.eval_images} eval photos')
    # a tiny model from scratch wants a larger step than fine-tuning, and batches of 32
    s = load_settings(overrides=tiny_overrides(root, epochs, **{'train.batch': 32, 'crop.size': 80},
                                               **{f'{t}.lr': 3e-3 for t in LEARNERS}))
    table = training_table(s)
    say(f'[2/4] cropped {len(table)} photos into {s.paths.cache}')
    model_dir = Path(s.paths.models) / 'fold0'
    shutil.rmtree(model_dir, ignore_errors=True)     # an earlier demo's learners may be of the other [train] mode
    train_learners(table, s, learners_for('all', s), [0], export_dir=model_dir, workers=0,
                   on_result=lambda r: say(f'[3/4] trained {r.task}: valid macro F1 {r.valid_f1:.3f} '
                                           f'({r.seconds:.0f} s, run {r.run_dir})'))
    predict_eval(s, [model_dir], s.predict.out, tta=True)
    scores = evaluate_files(s.predict.out, root / 'data' / 'eval' / 'answers.csv')
    say(f'[4/4] predicted with TTA -> {s.predict.out}; whole demo {time.perf_counter() - t0:.0f} s')
    return scores
