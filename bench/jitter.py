"""A jittered copy of a build's eval set: each photo its own shift, scale, rotation, colour and JPEG quality, so a
person's 7 photos no longer share one source face pixel for pixel (maskfaces makes grouping too easy).

    python bench/jitter.py data/mf600 runs/quality/jittered
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

__all__ = ['jitter_photo', 'jitter_copy']


def jitter_photo(im: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    "One photo, moved by up to 8% of its side, scaled 0.9-1.1, rotated up to 10 degrees, recoloured; JPEG quality."
    w, h = im.size
    im = im.convert('RGB').rotate(rng.uniform(-10, 10), resample=Image.BILINEAR,
                                  translate=tuple(rng.uniform(-0.08, 0.08, 2) * (w, h)), fillcolor=(0, 0, 0))
    s = rng.uniform(0.9, 1.1)
    sw, sh = round(w * s), round(h * s)
    im = im.resize((sw, sh), Image.BILINEAR)
    canvas = Image.new('RGB', (w, h))
    canvas.paste(im, ((w - sw) // 2, (h - sh) // 2))
    for enh, lo, hi in ((ImageEnhance.Brightness, 0.7, 1.3), (ImageEnhance.Contrast, 0.7, 1.3),
                        (ImageEnhance.Color, 0.6, 1.4)):
        canvas = enh(canvas).enhance(rng.uniform(lo, hi))
    return canvas, int(rng.integers(40, 96))


def jitter_copy(src: Path, dest: Path, seed: int = 0):
    "Eval photos jittered into `dest` (same names, info.csv, answers.csv and build_meta.csv)."
    src, dest = Path(src), Path(dest)
    (dest / 'eval' / 'images').mkdir(parents=True, exist_ok=True)
    for name in ('info.csv', 'answers.csv'): shutil.copy(src / 'eval' / name, dest / 'eval' / name)
    if (src / 'build_meta.csv').exists(): shutil.copy(src / 'build_meta.csv', dest / 'build_meta.csv')
    rng = np.random.default_rng(seed)
    for f in sorted((src / 'eval' / 'images').iterdir()):
        im, quality = jitter_photo(Image.open(f), rng)
        im.save(dest / 'eval' / 'images' / f.name, format='JPEG', quality=quality)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('src', type=Path, help='a build (competition layout with eval/answers.csv)')
    ap.add_argument('dest', type=Path)
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    jitter_copy(a.src, a.dest, a.seed)
    print(f'wrote {a.dest}')
