"""Jittered photos: each its own shift, scale, rotation, colour and JPEG quality, as separate captures of one person
would differ (maskfaces builds a person's 7 photos from one source face, which makes grouping too easy)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance

__all__ = ['jitter_photo', 'jitter_bytes']


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


def jitter_bytes(im: Image.Image, rng: np.random.Generator) -> bytes:
    "A jittered photo as the JPEG file a camera would have written."
    out, quality = jitter_photo(im, rng)
    buf = io.BytesIO()
    out.save(buf, format='JPEG', quality=quality)
    return buf.getvalue()
