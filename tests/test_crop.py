import logging

import matplotlib.cbook
import numpy as np
import pytest
import torch
from PIL import Image

from mcls.crop import centre_box, crop_images, detector, face_box
from mcls.dataset import load_train
from mcls.errors import ConfigError
from mcls.settings import load_settings
from tests.conftest import tiny_settings
from tests.helpers import FailingGpuDetector, _cli, _dead_pid, one_line_error


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


def test_a_fallback_detector_frames_what_mtcnn_missed_like_a_face_and_keys_the_cache(tmp_path, monkeypatch):
    "no MTCNN face: YuNet's box is framed as a detection is (margin, square); without a face there, the centre crop"
    import dataclasses

    import numpy as np
    from PIL import Image

    import mcls.crop as C
    photo = tmp_path / 'p.jpg'
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 160, 3), dtype=np.uint8)).save(photo)
    (tmp_path / 'yunet.onnx').write_bytes(b'not read: the detector is faked below')
    cs = load_settings(cwd=tmp_path).crop
    yunet = dataclasses.replace(cs, fallback_detector=tmp_path / 'yunet.onnx')
    assert C.crop_key(photo, cs) != C.crop_key(photo, yunet)                 # crops made with it are cached apart
    monkeypatch.setattr(C, '_detect', lambda mtcnn, images, stats: [(None, [None], None)] * len(images))
    seen = []
    monkeypatch.setattr(C, 'fallback_face', lambda im, det: seen.append(det) or (np.array([40., 50., 100., 130.]),
                                                                               np.full((5, 2), 70.)))
    out, stats = C.crop_images([str(photo)], yunet, tmp_path / 'cache', mtcnn=object(), progress=False)
    assert out[str(photo)].name.endswith('.yunet.jpg') and stats.rescued == 1 and stats.faces == 1
    assert seen == [yunet.fallback_detector] and C.landmarks_file(out[str(photo)]).exists()
    monkeypatch.setattr(C, 'fallback_face', lambda im, det: None)
    out, stats = C.crop_images([str(photo)], dataclasses.replace(yunet, margin=0.3), tmp_path / 'cache', mtcnn=object(),
                               progress=False)
    assert out[str(photo)].name.endswith('.centre.jpg') and stats.fallbacks == 1 and stats.rescued == 0


def test_a_missing_fallback_detector_is_one_line(tmp_path):
    import dataclasses

    import pytest as _pytest

    from mcls.crop import crop_key
    from mcls.settings import load_settings
    (tmp_path / 'p.jpg').write_bytes(b'x')
    cs = dataclasses.replace(load_settings(cwd=tmp_path).crop, fallback_detector=tmp_path / 'none.onnx')
    with _pytest.raises(ConfigError, match='fallback_detector = .*none.onnx: no such file'):
        crop_key(tmp_path / 'p.jpg', cs)


def test_crop_on_cuda_without_a_gpu_is_one_line(synth_root):
    if torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    r = _cli('crop', '--data', synth_root / 'data', '--set', 'crop.device=cuda', '--split', 'eval',
             '--set', f'paths.cache={synth_root / "c"}', cwd=synth_root)
    one_line_error(r, '[crop] device = cuda', 'use auto or cpu')


def test_short_writes_never_enter_the_crop_cache(synth_root):
    "item 1: under a file-size limit, crop fails with one line (exit 2) and every cache entry decodes whole."
    r = _cli('crop', '--data', synth_root / 'data', '--set', 'crop.size=64', '--set', f'paths.cache={synth_root / "c"}',
             cwd=synth_root, limit_kb=1)
    assert r.returncode == 2 and 'error:' in r.stderr and 'free space' in r.stderr, r.stderr
    entries = [p for p in (synth_root / 'c').rglob('*.jpg')]
    for p in entries:
        with Image.open(p) as im:
            im.load()
            assert im.size == (64, 64)
    assert not list((synth_root / 'c').rglob('*.tmp'))


def test_ten_pixel_photo_is_cropped_for_predict_image(tmp_path):
    s = tiny_settings(tmp_path)
    Image.new('RGB', (10, 10), (120, 90, 80)).save(tmp_path / 'tiny.jpg')
    out, st = crop_images([str(tmp_path / 'tiny.jpg')], s.crop, tmp_path / 'cache', strict=True, progress=False)
    assert st.fallbacks == 1 and Image.open(out[str(tmp_path / 'tiny.jpg')]).size == (64, 64)


def test_stray_temporary_in_the_crop_cache_is_cleaned(synth_root):
    s = tiny_settings(synth_root)
    files = load_train(synth_root / 'data').file.tolist()[:3]
    crop_images(files[:1], s.crop, s.paths.cache, progress=False)
    sub = next(p for p in s.paths.cache.iterdir() if p.is_dir())
    stray = sub / f'.x.face.jpg.{_dead_pid()}.tmp'
    stray.write_bytes(b'half')
    crop_images(files, s.crop, s.paths.cache, progress=False)
    assert not stray.exists()


def test_cut_short_cache_entry_from_an_older_version_is_cropped_again(synth_root):
    s = tiny_settings(synth_root)
    files = load_train(synth_root / 'data').file.tolist()[:2]
    first, _ = crop_images(files, s.crop, s.paths.cache, progress=False)
    p = first[files[0]]
    p.write_bytes(p.read_bytes()[:200])
    again, st = crop_images(files, s.crop, s.paths.cache, progress=False)
    assert st.cached == 1 and st.cropped == 1
    with Image.open(again[files[0]]) as im: im.load()


def test_cache_path_that_is_a_file_is_one_line(synth_root):
    (synth_root / 'cachefile').write_text('x')
    r = _cli('crop', '--data', synth_root / 'data', '--set', 'crop.size=64', '--split', 'eval',
             '--set', f'paths.cache={synth_root / "cachefile"}', cwd=synth_root)
    assert r.returncode == 2 and 'in the way' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_detector_error_on_the_gpu_is_detected_again_on_the_cpu_never_cached_as_no_face(synth_root, tmp_path, caplog):
    from mcls.crop import crop_images
    from mcls.dataset import load_train
    files = load_train(synth_root / 'data').file.tolist()[:12]
    s = tiny_settings(synth_root, crop__batch=4)
    plain, _ = crop_images(files, s.crop, tmp_path / 'plain', progress=False)            # the CPU's own answer
    gpu = FailingGpuDetector()
    with caplog.at_level(logging.WARNING):
        got, stats = crop_images(files, s.crop, tmp_path / 'gpu', mtcnn=gpu, progress=False)
    assert gpu.calls == stats.device_retries > 0
    assert 'face detection on cuda failed (OutOfMemoryError' in caplog.text and caplog.text.count('failed') == 1
    for f in files:       # the same kind of crop (face or centre) and the same pixels as the CPU gave
        assert got[f].name.split('.')[1] == plain[f].name.split('.')[1]
        assert np.array_equal(np.asarray(Image.open(got[f])), np.asarray(Image.open(plain[f])))
    assert stats.faces > 0

