"""Reading photos the way every stage needs them: upright RGB, whatever the file's mode or EXIF."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

__all__ = ['IMAGE_EXTS', 'is_hidden', 'open_rgb']

IMAGE_EXTS = ('.jpg', '.jpeg', '.png')


def is_hidden(path: Path) -> bool:
    "macOS resource forks (`._mask1.jpg`) and other dot files."
    return path.name.startswith('.')


def open_rgb(path: Path | str) -> Image.Image:
    """Decode fully (so truncated files fail here, not in a DataLoader worker), apply the EXIF rotation,
    and convert grey, palette, RGBA and CMYK to RGB. Raises OSError for unreadable files."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ('RGBA', 'LA', 'P'):
            im = im.convert('RGBA')
            bg = Image.new('RGB', im.size, (255, 255, 255))
            bg.paste(im, mask=im.getchannel('A'))
            return bg
        return im.convert('RGB')
