"""Synthetic data in the exact competition layout: drawn faces whose gender, age and mask state are visible
in the drawing, so a tiny model can learn them. Deterministic for a seed; needs no downloads."""
from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from .labels import GENDERS, MASK_STEMS, age_group, encode

__all__ = ['SynthInfo', 'draw_face', 'make_dataset']

RACES = ('Asian', 'Black', 'White', 'Others')
HAIR = {0: (40, 25, 15), 1: (120, 95, 70), 2: (235, 235, 235)}     # by age group: dark, greying brown, white
MASKS = ((60, 110, 200), (245, 245, 245), (30, 30, 30), (200, 60, 60), (90, 160, 90))
AGES = (19, 24, 28, 33, 41, 52, 58, 61, 67, 74)


@dataclass
class SynthInfo:
    root: Path
    persons: int
    train_images: int
    eval_images: int
    awkward: dict[str, str]      # awkward case -> the file that carries it


def draw_face(mask: int, gender: int, age: int, rng: np.random.Generator, size=(96, 128)) -> Image.Image:
    "One photo: hair length shows gender, hair colour and wrinkles show age, the mask's position its state."
    w, h = size
    bg = tuple(int(v) for v in rng.integers(150, 256, 3))
    im = Image.new('RGB', size, bg)
    d = ImageDraw.Draw(im)
    dx, dy, s = rng.uniform(-0.05, 0.05) * w, rng.uniform(-0.04, 0.04) * h, rng.uniform(0.9, 1.05)
    cx, cy = w / 2 + dx, h / 2 + dy
    fw, fh = 0.32 * w * s, 0.34 * h * s                      # face half-width / half-height
    grp = age_group(age)
    hair = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in HAIR[grp])
    if gender == 1:    # long hair behind the face, down to the shoulders
        d.rectangle([cx - fw * 1.25, cy - fh * 1.1, cx + fw * 1.25, cy + fh * 1.25], fill=hair)
    skin = tuple(int(v) for v in np.array([224, 180, 150]) * rng.uniform(0.55, 1.05))
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    d.chord([cx - fw, cy - fh * 1.08, cx + fw, cy - fh * 0.2], 180, 360, fill=hair)    # hair cap
    for i in range(grp * 2):                                    # forehead wrinkles grow with age
        y = cy - fh * 0.45 + i * fh * 0.07
        d.line([cx - fw * 0.45, y, cx + fw * 0.45, y], fill=(90, 60, 50), width=1)
    ey = cy - fh * 0.2
    for ex in (cx - fw * 0.4, cx + fw * 0.4):
        d.ellipse([ex - 3, ey - 2, ex + 3, ey + 2], fill=(20, 20, 20))
    d.polygon([(cx, cy - fh * 0.05), (cx - 4, cy + fh * 0.22), (cx + 4, cy + fh * 0.22)], fill=(170, 110, 90))
    d.line([cx - fw * 0.35, cy + fh * 0.5, cx + fw * 0.35, cy + fh * 0.5], fill=(170, 40, 50), width=3)
    colour = MASKS[int(rng.integers(len(MASKS)))]
    if mask == 0:      # worn: nose and mouth covered
        d.rounded_rectangle([cx - fw * 0.95, cy - fh * 0.05, cx + fw * 0.95, cy + fh * 0.85], 6, fill=colour)
    elif mask == 1:    # worn below the nose: mouth and chin covered, nose out
        d.rounded_rectangle([cx - fw * 0.9, cy + fh * 0.32, cx + fw * 0.9, cy + fh * 1.0], 6, fill=colour)
    noise = rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(im, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def _save(im: Image.Image, path: Path):
    im.save(path, format='PNG' if path.suffix == '.png' else 'JPEG', quality=92)


def _awkward(root: Path, folders: list[str]) -> dict[str, str]:
    """Overwrite a few training photos with the cases a loader must survive. Each goes to its own person."""
    imgs = root / 'train' / 'images'
    cases = {}

    def jpg(i, stem): return next((imgs / folders[i]).glob(f'{stem}.*'))

    src = jpg(0, 'mask1')
    (src.parent / f'._{src.name}').write_bytes(b'\x00\x05\x16\x07 resource fork')     # macOS AppleDouble file
    cases['hidden'] = str(src.parent / f'._{src.name}')
    shutil.copy(jpg(0, 'mask2'), jpg(0, 'mask2').with_name('selfie.jpg'))
    cases['unknown_stem'] = str(jpg(0, 'mask2').with_name('selfie.jpg'))
    f = jpg(1, 'incorrect_mask'); f.unlink()
    cases['six_images'] = str(f.parent)
    f = jpg(2, 'mask3'); data = f.read_bytes(); f.write_bytes(data[: len(data) // 3])
    cases['truncated'] = str(f)
    f = jpg(3, 'mask4'); Image.open(f).convert('L').save(f, format='JPEG'); cases['grey'] = str(f)
    f = jpg(3, 'mask5'); rgba = Image.open(f).convert('RGBA'); f.unlink(); f = f.with_suffix('.png')
    rgba.save(f); cases['rgba'] = str(f)
    f = jpg(4, 'mask4'); Image.open(f).convert('CMYK').save(f, format='JPEG'); cases['cmyk'] = str(f)
    f = jpg(4, 'normal'); up = Image.open(f).convert('RGB')
    exif = Image.Exif(); exif[0x0112] = 6            # orientation 6: viewer rotates 90 deg clockwise to show upright
    up.transpose(Image.ROTATE_90).save(f, format='JPEG', exif=exif.tobytes(), quality=92)
    cases['exif_rotated'] = str(f)
    return cases


def make_dataset(out: Path | str, persons: int = 40, eval_persons: int = 10, size=(96, 128), seed: int = 0,
                 awkward: bool = False, overwrite: bool = True) -> SynthInfo:
    """Write train/train.csv, train/images/{path}/, eval/info.csv, eval/images/, eval/answers.csv and, as the
    maskfaces builds do, build_meta.csv (file,split,id: each photo's person; answers, like answers.csv).
    About 5% of persons use .png or .jpeg (all seven photos). `awkward` adds a hidden file, an unknown stem,
    a person with six photos, a truncated, a grey, an RGBA, a CMYK and an EXIF-rotated photo."""
    root = Path(out)
    if root.exists() and overwrite: shutil.rmtree(root)
    (root / 'train' / 'images').mkdir(parents=True)
    (root / 'eval' / 'images').mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows, ev, meta = [], [], []
    n_train = 0
    for p in range(persons + eval_persons):
        prng = np.random.default_rng([seed, p])
        gender = int(prng.integers(2))
        age = int(AGES[prng.integers(len(AGES))])
        if p < persons:
            pid = f'{p + 1:06d}'
            folder = f'{pid}_{GENDERS[gender]}_{RACES[p % len(RACES)]}_{age}'
            rows.append((pid, GENDERS[gender], RACES[p % len(RACES)], age, folder))
            d = root / 'train' / 'images' / folder
            d.mkdir()
            ext = prng.choice(['.jpg'] * 18 + ['.png', '.jpeg'])
            for stem, mask in MASK_STEMS.items():
                _save(draw_face(mask, gender, age, prng, size), d / f'{stem}{ext}')
                meta.append((f'train/images/{folder}/{stem}{ext}', 'train', pid))
                n_train += 1
        else:
            for stem, mask in MASK_STEMS.items():
                image_id = hashlib.sha1(f'{seed}-{p}-{stem}'.encode()).hexdigest() + '.jpg'
                _save(draw_face(mask, gender, age, prng, size), root / 'eval' / 'images' / image_id)
                ev.append((image_id, int(encode(mask, gender, age_group(age)))))
                meta.append((f'eval/images/{image_id}', 'eval', f'{p + 1:06d}'))
    train = pd.DataFrame(rows, columns=['id', 'gender', 'race', 'age', 'path'])
    train.to_csv(root / 'train' / 'train.csv', index=False)
    order = rng.permutation(len(ev))
    ev_df = pd.DataFrame([ev[i] for i in order], columns=['ImageID', 'ans'])
    ev_df.to_csv(root / 'eval' / 'answers.csv', index=False)
    ev_df.assign(ans=0).to_csv(root / 'eval' / 'info.csv', index=False)
    pd.DataFrame(meta, columns=['file', 'split', 'id']).to_csv(root / 'build_meta.csv', index=False)
    cases = _awkward(root, [r[4] for r in rows]) if awkward else {}
    return SynthInfo(root, persons, n_train, len(ev), cases)
