"""Cached crops into the DataBlock, decoded at the training size: a JPEG decoder can scale by 1/2, 1/4 or 1/8 while it
decodes (DCT scaling), which on a 256 px crop trained at 128 px replaces decoding every pixel and resizing after."""
from __future__ import annotations

from pathlib import Path

from fastai.vision.all import DisplayedTransform, IntToFloatTensor, PILImage, TransformBlock
from PIL import Image

__all__ = ['OpenCrop', 'CropBlock']


class OpenCrop(DisplayedTransform):
    "A crop file -> PILImage, decoded no smaller than `size` on each side (JPEG only; other formats decode whole)."

    def __init__(self, size: int | None = None):   # None: decode whole, as fastai's PILImage.create does
        super().__init__()
        self.size = size

    def encodes(self, o):
        if not isinstance(o, (str, Path)): return PILImage.create(o)   # images, arrays, tensors, bytes: as fastai
        with Image.open(o) as im:
            if self.size: im.draft('RGB', (self.size, self.size))
            return PILImage(im.convert('RGB'))


def CropBlock(size: int | None = None) -> TransformBlock:
    "fastai's ImageBlock with OpenCrop for PILImage.create."
    return TransformBlock(type_tfms=OpenCrop(size), batch_tfms=IntToFloatTensor)
