"""An exponential moving average of the weights (timm's ModelEmaV3) for validation, the best checkpoint and the
export, as a fit callback, so an exported Learner carries none of it. The training weights keep training; the
average's state is saved beside each epoch's checkpoint, so a resumed run averages on as an uninterrupted one."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from fastai.callback.tracker import SaveModelCallback
from fastai.vision.all import Callback
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel

from . import distributed
from .atomic import storage_errors

__all__ = ['EmaWeights', 'ema_file', 'read_ema']


def ema_file(run_dir: Path, epoch: int) -> Path:
    "The average's state after `epoch`, beside the run's `last-<epoch>.pth`."
    return Path(run_dir) / f'ema-{epoch}.pth'


def read_ema(run_dir: Path, epoch: int) -> dict:
    "The average's saved state after `epoch`; any error (missing, cut off, foreign) is the caller's to handle."
    state = torch.load(ema_file(run_dir, epoch), map_location='cpu', weights_only=True)
    if not isinstance(state, dict) or not {'model', 'step'} <= set(state): raise ValueError('not an average\'s state')
    return state


class EmaWeights(Callback):
    """Validation (and so the best checkpoint) sees the average; the next epoch trains the training weights on.
    After the fit the model holds the average (or, when validating, the best epoch's average: the best checkpoint)."""
    order = 62    # after SaveModelCallback (61): the best checkpoint is the average's; before SaveLastCallback (63)

    def __init__(self,
                 decay: float,                    # per optimiser step; timm's warm-up ramps it up from 0
                 run_dir: Path,                   # where the average's state is saved after every epoch
                 resume_epoch: int | None = None  # the last complete epoch of a resumed run: its average is loaded
                 ):
        self.decay, self.run_dir, self.resume_epoch = decay, Path(run_dir), resume_epoch
        self.swapped = self.cancelled = False

    def _net(self):
        m = self.learn.model
        return m.module if isinstance(m, DistributedDataParallel) else m

    def _swap(self):
        "Exchange the model's weights and buffers with the average's, in place (the optimiser keeps its tensors)."
        with torch.no_grad():
            for a, b in zip(self._net().state_dict().values(), self.ema.module.state_dict().values()):
                tmp = a.clone()
                a.copy_(b)
                b.copy_(tmp)
        self.swapped = not self.swapped

    def before_fit(self):
        self.ema, self.step = ModelEmaV3(self._net(), decay=self.decay, use_warmup=True), 0
        if self.resume_epoch is not None:     # read_ema checked it when the resume began
            state = read_ema(self.run_dir, self.resume_epoch)
            self.ema.module.load_state_dict(state['model'])
            self.step = int(state['step'])

    def before_train(self):
        if self.swapped: self._swap()

    def after_step(self):
        self.step += 1
        self.ema.update(self._net(), step=self.step)

    def before_validate(self):
        if not self.swapped: self._swap()

    def before_epoch(self): self.cancelled = False
    def after_cancel_epoch(self): self.cancelled = True     # an epoch skipped on resume: nothing to save

    def after_epoch(self):
        if self.cancelled: return
        if self.swapped: self._swap()
        if distributed.is_main(): self._save(self.epoch)

    def _save(self, epoch: int):
        "Atomically, and the one before kept: `last_epoch.json` names this epoch or the one before it."
        dest = ema_file(self.run_dir, epoch)
        tmp = dest.with_name(f'.{dest.stem}.{os.getpid()}.tmp')
        with storage_errors(dest):
            try:
                torch.save({'model': self.ema.module.state_dict(), 'step': self.step}, tmp)
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
        for old in self.run_dir.glob('ema-*.pth'):
            if old.stem.split('-')[1].isdigit() and int(old.stem.split('-')[1]) < epoch - 1: old.unlink(missing_ok=True)

    def after_fit(self):
        # validating, SaveModelCallback (earlier in order) has just loaded the best checkpoint: an average
        if not any(isinstance(cb, SaveModelCallback) for cb in self.learn.cbs) and not self.swapped: self._swap()
