"""Progressive resizing: the first epochs of one fit train on smaller images, the last at the learner's size. A
network trained small and finished at its test size matches one trained large throughout (Touvron et al. 2019,
FixRes), for the cost of the small epochs. Photos are decoded and augmented at the final size; the training batch is
scaled down on its device, so DataLoader workers need no change of state between epochs."""
from __future__ import annotations

import torch.nn.functional as F
from fastai.vision.all import Callback

__all__ = ['ProgressiveResize']


class ProgressiveResize(Callback):
    """Scale each training batch of epoch e to `early_sizes[e]` (antialiased bilinear, as the item resize is); the
    epochs after them, validation and prediction see the learner's size. Given to the fit call, so an exported
    learner carries none of it; the epoch comes from fastai, so a resumed fit resumes the schedule."""
    order = 2     # before mixing and autocast, which read the batch

    def __init__(self, early_sizes: tuple[int, ...]):
        self.early_sizes = tuple(early_sizes)    # the sizes of the first epochs, one per epoch, each at most the final

    def size_at(self, epoch: int) -> int | None:
        "The side this epoch's training batches are scaled to (None: the learner's size)."
        return self.early_sizes[epoch] if epoch < len(self.early_sizes) else None

    def before_batch(self):
        side = self.size_at(self.epoch) if self.training else None
        if side is None: return
        x, *rest = self.learn.xb
        if x.shape[-1] != side or x.shape[-2] != side:
            self.learn.xb = (F.interpolate(x, size=(side, side), mode='bilinear', antialias=True, align_corners=False),
                             *rest)
