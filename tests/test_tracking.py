"""Experiment trackers: TensorBoard's event file holds the run's losses and metrics per epoch; W&B logs offline."""
import importlib.util
import json

import pytest

from mcls.train import train_task, training_table
from tests.conftest import tiny_settings


def test_tensorboard_records_every_epoch_of_the_run(synth_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    s = tiny_settings(synth_root, joint__epochs=2, train__track='tensorboard')
    r = train_task(training_table(s, progress=False), s, 'joint', 0, progress=False)
    acc = EventAccumulator(str(r.run_dir / 'tensorboard'))
    acc.Reload()
    tags = acc.Tags()['scalars']
    assert {'valid_loss', 'f1_score', 'age_f1'} <= set(tags)
    assert [e.step for e in acc.Scalars('f1_score')] and len(acc.Scalars('f1_score')) == 2     # one per epoch
    hist = __import__('pandas').read_csv(r.run_dir / 'history.csv')
    assert acc.Scalars('f1_score')[-1].value == pytest.approx(hist.f1_score.iloc[-1], abs=1e-6)


def test_tensorboard_records_a_full_run_without_validation(synth_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    s = tiny_settings(synth_root, train__track='tensorboard', gender__full_epochs=2)
    r = train_task(training_table(s, progress=False), s, 'gender', None, progress=False)
    acc = EventAccumulator(str(r.run_dir / 'tensorboard'))
    acc.Reload()
    assert 'train_loss' in acc.Tags()['scalars'] and 'valid_loss' not in acc.Tags()['scalars']


def test_no_tracker_writes_nothing(synth_root):
    s = tiny_settings(synth_root, train__track='')
    r = train_task(training_table(s, progress=False), s, 'gender', None, progress=False)
    assert not (r.run_dir / 'tensorboard').exists()


@pytest.mark.skipif(importlib.util.find_spec('wandb') is None,
                    reason='wandb is an optional extra, not installed here (pip install wandb)')
def test_wandb_logs_the_run_offline(synth_root, monkeypatch):
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_SILENT', 'true')
    s = tiny_settings(synth_root, train__track='wandb')
    r = train_task(training_table(s, progress=False), s, 'joint', 0, progress=False)
    runs = list((r.run_dir / 'wandb').glob('offline-run-*'))
    assert len(runs) == 1 and any(runs[0].rglob('*.wandb'))
    assert json.loads((r.run_dir / 'run.json').read_text())['status'] == 'done'
