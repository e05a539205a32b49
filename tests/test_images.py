"""Tests of mcls.images."""
import numpy as np
from PIL import Image

from mcls.images import open_rgb


def test_sixteen_bit_grey_png_keeps_its_picture(tmp_path):
    "item 6: PIL's convert clips 16-bit grey to white; the photo must keep its tones."
    ramp = np.tile(np.linspace(0, 65535, 64), (64, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / 'g16.png')
    rgb = np.asarray(open_rgb(tmp_path / 'g16.png'))
    assert rgb.shape == (64, 64, 3) and rgb[:, 0].max() < 5 and rgb[:, -1].min() > 250
    assert abs(rgb.mean() - 127.5) < 3

