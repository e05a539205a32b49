"""A jittered copy of a build's eval set: each photo its own shift, scale, rotation, colour and JPEG quality, so a
person's 7 photos no longer share one source face pixel for pixel (maskfaces makes grouping too easy).

    python bench/jitter.py data/mf600 runs/quality/jittered
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from mcls.jitter import jitter_bytes

__all__ = ['jitter_copy']


def jitter_copy(src: Path, dest: Path, seed: int = 0):
    "Eval photos jittered into `dest` (same names, info.csv, answers.csv and build_meta.csv)."
    src, dest = Path(src), Path(dest)
    (dest / 'eval' / 'images').mkdir(parents=True, exist_ok=True)
    for name in ('info.csv', 'answers.csv'): shutil.copy(src / 'eval' / name, dest / 'eval' / name)
    if (src / 'build_meta.csv').exists(): shutil.copy(src / 'build_meta.csv', dest / 'build_meta.csv')
    rng = np.random.default_rng(seed)
    for f in sorted((src / 'eval' / 'images').iterdir()):
        (dest / 'eval' / 'images' / f.name).write_bytes(jitter_bytes(Image.open(f), rng))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('src', type=Path, help='a build (competition layout with eval/answers.csv)')
    ap.add_argument('dest', type=Path)
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    jitter_copy(a.src, a.dest, a.seed)
    print(f'wrote {a.dest}')
