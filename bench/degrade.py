"""A degraded copy of a build's eval set: the photos as real capture makes them (small, blurred, compressed)."""
from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image, ImageFilter

__all__ = ['degrade_copy']


def degrade_copy(src: Path, dest: Path):
    "Eval photos as real capture: downscaled x3 (and back), blurred, saved at JPEG quality 30."
    (dest / 'eval' / 'images').mkdir(parents=True, exist_ok=True)
    for name in ('info.csv', 'answers.csv'): shutil.copy(src / 'eval' / name, dest / 'eval' / name)
    for f in (src / 'eval' / 'images').iterdir():
        im = Image.open(f).convert('RGB')
        small = im.resize((max(im.width // 3, 1), max(im.height // 3, 1)), Image.BILINEAR)
        out = small.resize(im.size, Image.BILINEAR).filter(ImageFilter.GaussianBlur(1.0))
        out.save(dest / 'eval' / 'images' / f.name, format='JPEG', quality=30)
