"""albumentations pipelines by name, and the fastai Transform that runs one on the training split only."""
from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import torch
from fastai.vision.all import BILINEAR, DisplayedTransform, PILImage

__all__ = ['PIPELINES', 'pipeline_names', 'build_pipeline', 'Squish', 'AlbumentationsTransform']


def _geometry(rotate: int = 20):
    return [A.Perspective(scale=(0.02, 0.08), p=0.5), A.Rotate(limit=rotate, border_mode=0, p=0.7)]


def real_capture():
    """Real mask photos are smaller, blurrier, more compressed and oddly lit than the composites:
    degrade towards them (a classifier at 0.99 on composites scored 0.60 on real photos without this)."""
    return [A.Downscale(scale_range=(0.25, 0.6), p=0.4),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 7)), A.MotionBlur(blur_limit=(3, 7))], p=0.35),
            A.ImageCompression(quality_range=(25, 90), p=0.5),
            A.RandomGamma(gamma_limit=(70, 140), p=0.3),
            A.ToGray(p=0.05)]


def mask_seed():
    return [*_geometry(20), A.RandomBrightnessContrast(p=0.5), A.HueSaturationValue(p=0.5)]


def age_seed():
    return [A.Rotate(limit=20, border_mode=0, p=0.7), A.RandomGridShuffle(grid=(2, 2), p=0.3),
            A.Perspective(scale=(0.02, 0.08), p=0.5), A.GaussNoise(std_range=(0.02, 0.08), p=0.3)]


def gender_seed():
    return [*_geometry(20), A.GaussNoise(std_range=(0.02, 0.08), p=0.3)]


def no_augmentation():
    return []


def tta_light():
    "TTA-safe: flips and small geometric changes only (no grid shuffle, no noise)."
    return [A.HorizontalFlip(p=0.5), A.Affine(scale=(0.95, 1.05), rotate=(-8, 8), border_mode=0, p=0.7)]


def flip():
    "TTA: the mirror image (with tta_passes = 1 and tta_beta = 0.5: the mean of a photo and its mirror)."
    return [A.HorizontalFlip(p=1.0)]


def light():
    "Flips and small shifts, scales and rotations: what a face photo can vary by without losing a label cue."
    return [A.HorizontalFlip(p=0.5), A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10),
                                              border_mode=0, p=0.7), A.RandomBrightnessContrast(p=0.3)]


def light_real():
    "light plus the real-capture degradations."
    return [*light(), *real_capture()]


def _real(seed_fn):
    def build(): return [A.HorizontalFlip(p=0.5), *seed_fn(), *real_capture()]
    build.__doc__ = f'{seed_fn.__name__} plus a horizontal flip and real-capture degradations.'
    return build


PIPELINES = {
    'none': no_augmentation,
    'mask_seed': mask_seed, 'age_seed': age_seed, 'gender_seed': gender_seed,
    'mask_real': _real(mask_seed), 'age_real': _real(age_seed), 'gender_real': _real(gender_seed),
    'real_capture': real_capture, 'tta_light': tta_light, 'flip': flip, 'light': light, 'light_real': light_real,
}


def pipeline_names() -> list[str]: return sorted(PIPELINES)


def build_pipeline(name: str) -> A.Compose:
    """A built-in pipeline by name, or an albumentations file (`A.save` JSON/YAML) by path, so a user can
    add one without touching code."""
    if name in PIPELINES: return A.Compose(PIPELINES[name]())
    path = Path(name)
    if path.suffix.lower() in ('.json', '.yaml', '.yml'):
        if not path.exists(): raise ValueError(f'pipeline file {path} not found')
        return A.load(str(path), data_format='yaml' if path.suffix.lower() != '.json' else 'json')
    raise ValueError(f'unknown pipeline {name!r}: use one of {pipeline_names()} or an albumentations JSON/YAML file')


class Squish(DisplayedTransform):
    """The pixels of fastai's `Resize(size, method='squish')` at less cost: that one crops the whole photo and pads it
    by zero through a NumPy round trip before resizing (a third of Resize's time under cProfile)."""
    order = 1

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def encodes(self, img: PILImage): return img.resize((self.size, self.size), BILINEAR)


class AlbumentationsTransform(DisplayedTransform):
    "Apply a named albumentations pipeline to PIL images of the training split (split_idx 0) only."
    split_idx, order = 0, 2     # after Squish (order 1): augment at model size, which is cheaper

    def __init__(self, pipeline: str):
        super().__init__()
        self.pipeline = pipeline
        self.aug = build_pipeline(pipeline)

    def __getstate__(self):   # pickle the name, not the albumentations objects: exports stay small and portable
        state = self.__dict__.copy()
        state.pop('aug', None); state.pop('_seed', None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.aug = build_pipeline(self.pipeline)

    def encodes(self, img: PILImage):
        # albumentations 2.x keeps its own RNG, deaf to fastai's set_seed, and forked workers would copy one state:
        # seed it from torch's seed, which set_seed fixes and which differs per DataLoader worker
        seed = torch.initial_seed()
        if getattr(self, '_seed', None) != seed: self.aug.set_random_seed(seed % 2**32); self._seed = seed
        return PILImage.create(self.aug(image=np.asarray(img))['image'])
