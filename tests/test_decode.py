import pickle

import numpy as np
import pytest
from fastai.vision.all import PILImage
from PIL import Image

from mcls.decode import OpenCrop
from mcls.learner import task_dls
from mcls.train import training_table
from tests.conftest import tiny_settings


def _photo(path, size=256, fmt='JPEG'):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    img = np.stack([xx, yy, (xx + yy) // 2], -1) % 256 + rng.integers(0, 20, (size, size, 3))
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, format=fmt)
    return path


def test_whole_decode_is_fastais(tmp_path):
    f = _photo(tmp_path / 'a.jpg')
    ours = OpenCrop()(f)
    assert isinstance(ours, PILImage) and ours.size == (256, 256)
    assert (np.asarray(ours) == np.asarray(PILImage.create(f))).all()


@pytest.mark.parametrize('size, decoded', [(128, 128), (100, 128), (64, 64), (224, 256), (300, 256)])
def test_jpeg_decodes_no_smaller_than_size(tmp_path, size, decoded):
    f = _photo(tmp_path / 'a.jpg')
    im = OpenCrop(size)(f)
    assert im.size == (decoded, decoded) and im.mode == 'RGB'
    bilinear = np.asarray(Image.open(f).convert('RGB').resize(im.size, Image.BILINEAR), dtype=float)
    assert np.abs(np.asarray(im, dtype=float) - bilinear).mean() < 3     # the same picture, resampled otherwise


def test_images_and_arrays_pass_as_fastai_creates_them(tmp_path):
    img = np.asarray(OpenCrop()(_photo(tmp_path / 'a.jpg')))
    for o in (img, Image.fromarray(img)):
        out = OpenCrop(64)(o)
        assert isinstance(out, PILImage) and (np.asarray(out) == img).all()


def test_png_decodes_whole(tmp_path):
    f = _photo(tmp_path / 'a.png', fmt='PNG')
    assert OpenCrop(128)(f).size == (256, 256)


def test_setting_reaches_the_loader_and_the_export(synth_root):
    s = tiny_settings(synth_root, crop__size=128, train__size=64, train__decode_at_size='true')
    table = training_table(s, progress=False)
    dls = task_dls(table.assign(is_valid=table.fold == 0), s.tasks['mask'])
    opens = [t for t in dls.train_ds.tfms[0].fs if isinstance(t, OpenCrop)]
    assert [t.size for t in opens] == [64]
    assert pickle.loads(pickle.dumps(opens[0])).size == 64
    xb, _ = dls.one_batch()
    assert tuple(xb.shape[1:]) == (3, 64, 64)
    off = task_dls(table.assign(is_valid=table.fold == 0), tiny_settings(synth_root).tasks['mask'])
    assert [t.size for t in off.train_ds.tfms[0].fs if isinstance(t, OpenCrop)] == [None]
