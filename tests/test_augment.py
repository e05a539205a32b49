import pickle

import albumentations as A
import numpy as np
import pytest
import torch
from fastai.vision.all import PILImage, Resize

from mcls.augment import PIPELINES, AlbumentationsTransform, Squish, build_pipeline
from mcls.learner import task_dls
from mcls.train import training_table
from tests.conftest import tiny_settings


@pytest.mark.parametrize('name', sorted(PIPELINES))
def test_every_pipeline_runs(name):
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    out = build_pipeline(name)(image=img)['image']
    assert out.shape == img.shape and out.dtype == np.uint8


@pytest.mark.parametrize('shape', [(256, 256), (97, 150), (40, 31)])
@pytest.mark.parametrize('split_idx', [0, 1])
def test_squish_gives_fastai_resize_pixels(shape, split_idx):
    img = PILImage.create(np.random.default_rng(1).integers(0, 255, (*shape, 3), dtype=np.uint8))
    ours, theirs = Squish(64)(img, split_idx=split_idx), Resize(64, method='squish')(img, split_idx=split_idx)
    assert isinstance(ours, PILImage) and ours.size == (64, 64)
    assert (np.asarray(ours) == np.asarray(theirs)).all()


def test_real_pipelines_add_capture_degradations():
    names = {type(t).__name__ for t in build_pipeline('mask_real').transforms}
    assert {'Downscale', 'ImageCompression', 'Perspective', 'HueSaturationValue'} <= names


def test_pipeline_from_file(tmp_path):
    f = tmp_path / 'mine.json'
    A.save(A.Compose([A.HorizontalFlip(p=1.0)]), str(f), data_format='json')
    img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert (build_pipeline(str(f))(image=img)['image'] == img[:, ::-1]).all()


def test_unknown_pipeline():
    with pytest.raises(ValueError, match='unknown pipeline'): build_pipeline('sparkles')


def test_transform_is_train_only_and_pickles_by_name():
    tfm = AlbumentationsTransform('mask_real')
    img = PILImage.create(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert (np.asarray(tfm(img, split_idx=1)) == np.asarray(img)).all()
    assert any((np.asarray(tfm(img, split_idx=0)) != np.asarray(img)).any() for _ in range(5))
    again = pickle.loads(pickle.dumps(tfm))
    assert again.pipeline == 'mask_real' and len(pickle.dumps(tfm)) < 2000


def test_augmentation_runs_on_training_split_only(synth_root):
    s = tiny_settings(synth_root, mask__pipeline='mask_real')
    table = training_table(s, progress=False)
    df = table.assign(is_valid=table.fold == 0)
    dls = task_dls(df, s.tasks['mask'])
    train, valid = (dl.new(shuffle=False, drop_last=False) for dl in (dls.train, dls.valid))
    assert torch.equal(valid.one_batch()[0], valid.one_batch()[0])              # validation: as is
    t1, t2 = train.one_batch()[0], train.one_batch()[0]                          # training: augmented each pass
    assert sum(not torch.equal(a, b) for a, b in zip(t1, t2)) >= len(t1) // 2
