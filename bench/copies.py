"""Copies of a build's eval set that real use would bring: degraded (real capture: small, blurred, compressed) and
jittered (each photo its own shift, scale, rotation, colour and JPEG quality, so a person's 7 photos no longer
share one source face pixel for pixel, which makes person grouping too easy). The copy links the build's train/
folder, where person grouping chooses its threshold.

    python -m bench.copies jittered data/mf600 runs/quality/jittered
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from mcls.jitter import jitter_bytes

__all__ = ['degrade_photo', 'jitter_copy', 'degrade_copy', 'COPIES']


def degrade_photo(im: Image.Image) -> bytes:
    "A photo as real capture: downscaled x3 (and back), blurred, saved at JPEG quality 30."
    import io
    im = im.convert('RGB')
    small = im.resize((max(im.width // 3, 1), max(im.height // 3, 1)), Image.BILINEAR)
    buf = io.BytesIO()
    small.resize(im.size, Image.BILINEAR).filter(ImageFilter.GaussianBlur(1.0)).save(buf, format='JPEG', quality=30)
    return buf.getvalue()


def _copy(src: Path, dest: Path, photo):
    "The eval set of `src` in `dest`, each photo's bytes from `photo(image)`, with its CSVs, build_meta.csv and train/."
    src, dest = Path(src), Path(dest)
    (dest / 'eval' / 'images').mkdir(parents=True, exist_ok=True)
    for name in ('info.csv', 'answers.csv'): shutil.copy(src / 'eval' / name, dest / 'eval' / name)
    if (src / 'build_meta.csv').exists(): shutil.copy(src / 'build_meta.csv', dest / 'build_meta.csv')
    if not (dest / 'train').exists() and (src / 'train').exists():
        (dest / 'train').symlink_to((src / 'train').resolve())
    for f in sorted((src / 'eval' / 'images').iterdir()):
        with Image.open(f) as im: (dest / 'eval' / 'images' / f.name).write_bytes(photo(im))


def degrade_copy(src: Path, dest: Path):
    _copy(src, dest, degrade_photo)


def jitter_copy(src: Path, dest: Path, seed: int = 0):
    rng = np.random.default_rng(seed)
    _copy(src, dest, lambda im: jitter_bytes(im, rng))


COPIES = {'degraded': degrade_copy, 'jittered': jitter_copy}


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('kind', choices=sorted(COPIES))
    ap.add_argument('src', type=Path, help='a build (competition layout with eval/answers.csv)')
    ap.add_argument('dest', type=Path)
    a = ap.parse_args()
    COPIES[a.kind](a.src, a.dest)
    print(f'wrote {a.dest}')
