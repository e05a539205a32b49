"""Progressive resizing: the size each epoch trains at, validation and export at the final size, resume."""
import json

import pytest
import torch
from fastai.vision.all import Callback

from mcls.errors import ConfigError
from mcls.progressive import ProgressiveResize
from tests.conftest import kill_after_first_epoch, tiny_settings


@pytest.mark.parametrize('early, size, epochs, want', [
    ((32, 48), 64, 4, [32, 48, 64, 64]),
    ((), 64, 2, [64, 64]),
    ((32,), 64, 1, [32]),        # more early sizes than epochs: settings refuse it (below); the schedule cuts
])
def test_epoch_sizes_are_the_early_ones_then_the_final(early, size, epochs, want):
    cb = ProgressiveResize(early)
    assert [cb.size_at(e) or size for e in range(epochs)] == want


def test_a_batch_is_scaled_in_training_only():
    cb = ProgressiveResize((32,))

    class FakeLearn:
        xb, epoch, training = (torch.rand(2, 3, 64, 64),), 0, True
    cb.learn = FakeLearn()
    cb.before_batch()
    assert cb.learn.xb[0].shape == (2, 3, 32, 32)
    cb.learn.xb, cb.learn.training = (torch.rand(2, 3, 64, 64),), False
    cb.before_batch()
    assert cb.learn.xb[0].shape == (2, 3, 64, 64)          # validation at the learner's size
    cb.learn.xb, cb.learn.training, cb.learn.epoch = (torch.rand(2, 3, 64, 64),), True, 1
    cb.before_batch()
    assert cb.learn.xb[0].shape == (2, 3, 64, 64)          # past the early epochs


class SeenSizes(Callback):
    "Records the side of every batch the model sees, by epoch and phase."
    order = 50

    def __init__(self): self.seen = {}
    def before_fit(self): self.seen = {}
    def after_pred(self):
        self.seen.setdefault((self.epoch, self.training), set()).add(self.xb[0].shape[-1])


def _train_seeing(monkeypatch, table, s, fold, run_dir=None, resume_state=None):
    import mcls.train as T
    seen = SeenSizes()
    real = T._fit_cbs
    monkeypatch.setattr(T, '_fit_cbs', lambda *a: [*real(*a), seen])
    r = T.train_task(table, s, 'joint', fold, export_dir=s.paths.models / 'fold0', run_dir=run_dir,
                     resume_state=resume_state, progress=False)
    monkeypatch.setattr(T, '_fit_cbs', real)
    return r, seen.seen


def test_each_epoch_trains_at_its_size_and_validates_and_exports_at_the_final(synth_root, monkeypatch):
    from mcls.export import read_meta
    from mcls.train import training_table
    s = tiny_settings(synth_root, joint__epochs=3, joint__early_sizes='32,48', joint__batch=8)
    table = training_table(s, progress=False)
    r, seen = _train_seeing(monkeypatch, table, s, 0)
    assert {k: v for k, v in seen.items() if k[1]} == {(0, True): {32}, (1, True): {48}, (2, True): {64}}
    assert all(v == {64} for k, v in seen.items() if not k[1])           # every validation at 64 px
    assert read_meta(r.export_dir, 'joint')['size'] == 64


def test_a_resumed_run_resumes_the_schedule(synth_root, monkeypatch):
    from mcls.train import training_table
    s = tiny_settings(synth_root, joint__epochs=3, joint__early_sizes='32,48', joint__batch=8)
    table = training_table(s, progress=False)
    kill_after_first_epoch(monkeypatch, table, s, 'joint', 0)
    run_dir = next((s.paths.runs).glob('*-joint-fold0'))
    state = json.loads((run_dir / 'last_epoch.json').read_text())
    _, seen = _train_seeing(monkeypatch, table, s, 0, run_dir=run_dir, resume_state=state)
    assert {k: v for k, v in seen.items() if k[1]} == {(1, True): {48}, (2, True): {64}}


@pytest.mark.parametrize('early, why', [('32,48,56', 'fewer sizes than epochs'), ('32,96', 'at most size')])
def test_a_schedule_without_a_final_epoch_at_size_is_refused(synth_root, early, why):
    from mcls.learner import check_task_settings
    s = tiny_settings(synth_root, joint__epochs=3, joint__early_sizes=early)
    with pytest.raises(ConfigError, match='early_sizes'):
        check_task_settings(s.tasks['joint'])
