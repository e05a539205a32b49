import matplotlib.cbook
import pytest
from PIL import Image

from mcls.crop import centre_box, crop_images, detector, face_box
from mcls.dataset import load_train
from tests.conftest import tiny_settings


@pytest.fixture
def files_and_settings(synth_root):
    s = tiny_settings(synth_root, crop__batch=8)
    return load_train(synth_root / 'data').file.tolist(), s


def test_second_run_crops_nothing(files_and_settings):
    files, s = files_and_settings
    first, st1 = crop_images(files, s.crop, s.paths.cache, progress=False)
    assert st1.cropped == len(files) and st1.cached == 0
    assert all(Image.open(p).size == (64, 64) for p in first.values())
    again, st2 = crop_images(files, s.crop, s.paths.cache, progress=False)
    assert st2.cropped == 0 and st2.cached == len(files) and again == first


def test_changed_settings_miss_the_cache(files_and_settings):
    files, s = files_and_settings
    crop_images(files[:5], s.crop, s.paths.cache, progress=False)
    s2 = tiny_settings(s.paths.cache.parent, crop__size=48)
    _, st = crop_images(files[:5], s2.crop, s.paths.cache, progress=False)
    assert st.cached == 0 and st.cropped == 5


def test_killed_run_resumes(files_and_settings):
    files, s = files_and_settings
    mtcnn = detector(s.crop)
    real_detect, calls = mtcnn.detect, []

    def dying_detect(imgs, *a, **k):
        if calls: raise KeyboardInterrupt      # killed during the second batch
        calls.append(len(imgs))
        return real_detect(imgs, *a, **k)

    mtcnn.detect = dying_detect
    with pytest.raises(KeyboardInterrupt): crop_images(files, s.crop, s.paths.cache, mtcnn=mtcnn, progress=False)
    written = list(s.paths.cache.rglob('*'))
    assert not [p for p in written if p.name.endswith('.tmp')]          # nothing half-written
    assert len([p for p in written if p.suffix == '.jpg']) == calls[0] == 8      # crops (landmarks beside some)
    _, st = crop_images(files, s.crop, s.paths.cache, progress=False)
    assert st.cached == 8 and st.cropped == len(files) - 8


def test_mtcnn_finds_grace_hopper_and_falls_back_on_a_blank(tmp_path, files_and_settings):
    _, s = files_and_settings
    hopper = matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)
    blank = tmp_path / 'blank.jpg'
    Image.new('RGB', (384, 512), (200, 200, 200)).save(blank)
    out, st = crop_images([str(hopper), str(blank)], s.crop, tmp_path / 'cache', progress=False)
    assert out[str(hopper)].name.endswith('.face.jpg')
    assert out[str(blank)].name.endswith('.centre.jpg')
    assert st.faces == 1 and st.fallbacks == 1


def test_centre_box_is_the_seed_crop_scaled(files_and_settings):
    _, s = files_and_settings
    assert centre_box(384, 512, s.crop) == (42.0, 106.0, 342.0, 406.0)        # 300x300 on 384x512
    assert centre_box(192, 256, s.crop) == (21.0, 53.0, 171.0, 203.0)
    assert centre_box(200, 200, s.crop) == (21.875, 21.875, 178.125, 178.125)            # square stays square
    assert centre_box(512, 384, s.crop) == (106.0, 42.0, 406.0, 342.0)


def test_face_box_is_square_with_margin_and_inside():
    x0, y0, x1, y1 = face_box((40, 50, 80, 100), 200, 200, 0.2)
    assert x1 - x0 == y1 - y0 == pytest.approx(60)
    assert (x0 + x1) / 2 == 60 and (y0 + y1) / 2 == 75
    x0, y0, x1, y1 = face_box((0, 0, 50, 50), 200, 200, 0.5)         # pushed back inside the photo
    assert (x0, y0) == (0, 0) and x1 - x0 == 75
