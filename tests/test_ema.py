"""[train] ema: an average of the weights validates, is the best checkpoint and is exported; the training weights
train on; a resumed run averages on from its saved state."""
import json

import pytest
import torch
from fastai.vision.all import Callback

import mcls.train as T
from mcls.ema import ema_file
from mcls.train import resume_task, train_task, training_table
from tests.conftest import kill_after_first_epoch, tiny_settings


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


class Snapshots(Callback):
    "The weights the model holds when validation starts and when the epoch ends (the training weights, by then)."
    order = 99

    def __init__(self): self.valid, self.end = {}, {}
    def before_validate(self): self.valid[self.epoch] = _state(self.learn.model)
    def after_epoch(self): self.end[self.epoch] = _state(self.learn.model)


def _run(monkeypatch, s, table, fold, export_dir=None):
    real, snaps = T._fit_cbs, Snapshots()
    monkeypatch.setattr(T, '_fit_cbs', lambda *a: [*real(*a), snaps])
    return train_task(table, s, 'mask', fold, export_dir=export_dir, progress=False), snaps


def test_full_training_exports_the_average_and_keeps_training_the_weights(synth_root, monkeypatch):
    s = tiny_settings(synth_root, train__ema='0.9', mask__full_epochs=2)
    r, snaps = _run(monkeypatch, s, training_table(s, progress=False), None, synth_root / 'out')
    last = torch.load(ema_file(r.run_dir, 1), weights_only=True)
    from safetensors.torch import load_file
    weights = load_file(synth_root / 'out' / 'mask.safetensors')
    assert set(weights) == set(last['model'])
    assert _same(weights, last['model']) and not _same(weights, snaps.end[1])   # the average, not the last weights
    assert last["step"] > 0 and ema_file(r.run_dir, 0).exists()     # the one before the last is kept


def test_validation_and_the_best_checkpoint_see_the_average(synth_root, monkeypatch):
    s = tiny_settings(synth_root, train__ema='0.9', mask__epochs=2)
    r, snaps = _run(monkeypatch, s, training_table(s, progress=False), 0)
    for e in (0, 1):
        avg = torch.load(ema_file(r.run_dir, e), weights_only=True)['model']
        assert _same(avg, snaps.valid[e]) and not _same(avg, snaps.end[e])
    best = torch.load(r.run_dir / 'best.pth', weights_only=False)
    best = best.get('model', best)
    assert any(_same(best, torch.load(ema_file(r.run_dir, e), weights_only=True)['model']) for e in (0, 1))
    state = json.loads((r.run_dir / 'last_epoch.json').read_text())
    last = torch.load(r.run_dir / f"{state['file']}.pth", weights_only=False)['model']
    assert _same(last, snaps.end[1])          # what a resume continues from: the training weights


def test_a_resumed_run_averages_on_from_its_saved_state(synth_root, monkeypatch):
    s = tiny_settings(synth_root, train__ema='0.9', mask__full_epochs=3)
    table = training_table(s, progress=False)
    kill_after_first_epoch(monkeypatch, table, s, 'mask', None)
    run = next((synth_root / 'runs').iterdir())
    after0 = torch.load(ema_file(run, 0), weights_only=True)
    loaded = {}
    from mcls import ema as E
    real_load = E.EmaWeights.before_fit

    def spy(self):
        real_load(self)
        loaded.update(step=self.step, model=_state(self.ema.module))
    monkeypatch.setattr(E.EmaWeights, 'before_fit', spy)
    resume_task(run, progress=False)
    assert loaded['step'] == after0['step'] > 0 and _same(loaded['model'], after0['model'])
    final = torch.load(ema_file(run, 2), weights_only=True)
    assert final['step'] == 3 * after0['step'] and not ema_file(run, 0).exists()


@pytest.mark.parametrize('damage', ['cut', 'missing'])
def test_a_damaged_or_missing_average_restarts_the_run_with_a_warning(synth_root, monkeypatch, caplog, damage):
    "the average cannot continue from nothing: the run restarts, as with a damaged checkpoint, and says so"
    s = tiny_settings(synth_root, train__ema='0.9', mask__full_epochs=2)
    table = training_table(s, progress=False)
    kill_after_first_epoch(monkeypatch, table, s, 'mask', None)
    run = next((synth_root / 'runs').iterdir())
    f = ema_file(run, 0)
    if damage == 'cut': f.write_bytes(f.read_bytes()[:100])
    else: f.unlink()
    r = resume_task(run, progress=False)
    assert 'restarting the run from its first epoch' in caplog.text and 'weight average' in caplog.text
    assert json.loads((run / 'run.json').read_text())['status'] == 'done' and r.epochs == 2
    assert torch.load(ema_file(run, 1), weights_only=True)['step'] > 0
