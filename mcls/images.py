"""Reading photos the way every stage needs them: upright 8-bit RGB, whatever the file's mode, depth or EXIF."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ['IMAGE_EXTS', 'UnreadableImage', 'is_hidden', 'open_rgb']

IMAGE_EXTS = ('.jpg', '.jpeg', '.png')


class UnreadableImage(OSError):
    "A photo that cannot be decoded or converted to RGB (truncated, corrupt, a decompression bomb, an odd mode)."


def is_hidden(path: Path) -> bool:
    "macOS resource forks (`._mask1.jpg`) and other dot files."
    return path.name.startswith('.')


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale ('I;16*', 'I', 'F') scaled to 0-255 by their bit depth: PIL's convert('L')
    clips them, which turns a 16-bit photo into a white square."""
    a = np.asarray(im, dtype=np.float64)
    if im.mode == 'F': hi = 1.0 if a.size and np.nanmax(a) <= 1.0 else 255.0
    else: hi = 65535.0 if im.mode.startswith('I;16') or (a.size and a.max() > 255) else 255.0
    return Image.fromarray(np.clip(np.nan_to_num(a) / hi * 255.0, 0, 255).round().astype(np.uint8), 'L')


def open_rgb(path: Path | str) -> Image.Image:
    """Decode fully (so truncated files fail here, not in a DataLoader worker), apply the EXIF rotation, and
    convert grey (8 to 32 bit), palette, RGBA and CMYK to 8-bit RGB. Raises UnreadableImage naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)   # no face photo has 89+ megapixels
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                if im.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F'): im = _to_8bit(im)
                if im.mode in ('RGBA', 'LA', 'P', 'PA'):
                    im = im.convert('RGBA')
                    bg = Image.new('RGB', im.size, (255, 255, 255))
                    bg.paste(im, mask=im.getchannel('A'))
                    return bg
                return im.convert('RGB')
    except (OSError, SyntaxError, ValueError, TypeError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise UnreadableImage(f'{path}: cannot read this image ({type(e).__name__}: {e})') from None
