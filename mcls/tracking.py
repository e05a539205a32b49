"""Experiment trackers for the fit call (rank 0 only, never exported): TensorBoard and Weights & Biases through
fastai's own callbacks, chosen by `[train] track`. A tracker named but not installed says so once and the run goes
on: tracking is bookkeeping, never a reason to stop the work."""
from __future__ import annotations

import logging
from pathlib import Path

from fastai.vision.all import Callback

from .settings import CHOICES

__all__ = ['TRACKERS', 'tracking_cbs', 'WandbRun']

TRACKERS = CHOICES['train.track']     # [train] track: a comma-separated subset; empty for none
log = logging.getLogger(__name__)


class WandbRun(Callback):
    "Opens a W&B run named after the run folder for fastai's WandbCallback (which closes it when the fit ends)."
    order = 40     # before WandbCallback (Recorder + 1), which needs the run open

    def __init__(self, run_dir: Path, config: dict):
        self.run_dir, self.config = Path(run_dir), config

    def before_fit(self):
        import wandb
        wandb.init(project='mcls', name=self.run_dir.name, dir=str(self.run_dir), config=self.config,
                   id=self.run_dir.name.replace(':', '-'), resume='allow')   # --resume continues the same W&B run



def _tensorboard(log_dir: Path) -> Callback:
    "fastai's TensorBoardCallback (ImportError without tensorboard), logging what it can of torch's AdamW."
    import tensorboard  # noqa: F401 - fastai's callback needs it through torch.utils.tensorboard
    from fastai.callback.tensorboard import TensorBoardCallback

    class TensorBoard(TensorBoardCallback):
        """Per training batch the loss and the numeric hyper-parameters (torch's AdamW also holds None and flags),
        per epoch what was measured (--full measures no validation: None)."""
        def after_epoch(self):
            for n, v in zip(self.recorder.metric_names[2:-1], self.recorder.log[2:-1]):
                if v is not None: self.writer.add_scalar(n, v, self.train_iter)

        def after_batch(self):
            if not self.training: return
            self.writer.add_scalar('train_loss', self.smooth_loss, self.train_iter)
            for i, h in enumerate(self.opt.hypers):
                for k, v in h.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        self.writer.add_scalar(f'{k}_{i}', v, self.train_iter)

    return TensorBoard(log_dir=str(log_dir), trace_model=False, log_preds=False)


def _wandb() -> Callback:
    "fastai's WandbCallback (ImportError without wandb); the run's settings are its config, given to wandb.init."
    import wandb
    from fastai.callback.wandb import WandbCallback

    class Wandb(WandbCallback):
        def before_fit(self):      # fastai's own gathering of the learner's arguments cannot format mcls's transforms
            self.learn.gather_args = dict
            try:
                super().before_fit()
            finally:
                del self.learn.gather_args

        def after_fit(self):
            super().after_fit()
            wandb.finish()

    return Wandb(log_preds=False, log_model=False)


def _missing(name: str, extra: str):
    log.warning('[train] track names %s, which is not installed here: pip install "mcls[%s]"; training without it',
                name, extra)


def tracking_cbs(track: tuple[str, ...], run_dir: Path, config: dict) -> list[Callback]:
    "The callbacks of the trackers in `track`, logging into the run folder (TensorBoard) or a W&B run named after it."
    cbs: list[Callback] = []
    track = track or ()
    if 'tensorboard' in track:
        try:
            cbs.append(_tensorboard(Path(run_dir) / 'tensorboard'))
        except ImportError:
            _missing('tensorboard', 'tensorboard')
    if 'wandb' in track:
        try:
            cbs += [WandbRun(run_dir, config), _wandb()]
        except ImportError:
            _missing('wandb', 'wandb')
    return cbs
