"""Face crops: MTCNN (facenet-pytorch) with the seed's centre-crop fallback, cached by content and settings."""
from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .atomic import atomic_path, output_dir, remove_stray
from .errors import ConfigError, DataError, WriteError
from .images import UnreadableImage, open_rgb
from .settings import CropSettings

try:   # facenet-pytorch is installed with --no-deps (its metadata pins an old torch): check that it really works
    from facenet_pytorch import MTCNN
except Exception as e:  # noqa: BLE001 - any failure here means the same fix
    raise ImportError(f'facenet-pytorch does not import ({type(e).__name__}: {e}). Install it with '
                      f'`pip install --no-deps facenet-pytorch==2.6.0` (setup.sh does this).') from e

__all__ = ['CropStats', 'crop_key', 'centre_box', 'face_box', 'fallback_face', 'detector', 'landmarks_file',
           'save_landmarks', 'crop_images', 'attach_crops']

log = logging.getLogger(__name__)
FACE, YUNET, CENTRE = 'face', 'yunet', 'centre'     # MTCNN's face, YuNet's where MTCNN had none, neither


@dataclass
class CropStats:
    total: int = 0
    cached: int = 0
    faces: int = 0
    fallbacks: int = 0
    device_retries: int = 0     # batches whose detection failed on the GPU and ran again on the CPU
    rescued: int = 0            # photos MTCNN found no face in and the fallback detector did (counted in faces)
    seconds: float = 0.0
    skipped: Counter = field(default_factory=Counter)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)

    @property
    def cropped(self): return self.faces + self.fallbacks

    @property
    def images_per_s(self): return self.cropped / self.seconds if self.seconds else 0.0


def _settings_tag(cs: CropSettings) -> str:
    tag = f'v2|{cs.size}|{cs.margin}|{cs.min_prob}|{cs.fallback_crop}|{cs.fallback_ref}'   # v2: square fallback
    return tag if cs.fallback_detector is None else f'{tag}|yunet:{_detector_digest(cs.fallback_detector)}'


def _detector_digest(path: Path) -> str:
    from .identity import weights_digest
    if not Path(path).is_file():
        raise ConfigError(f'[crop] fallback_detector = {path}: no such file; give the YuNet ONNX file '
                          f'(OpenCV Zoo, face_detection_yunet) or leave it empty for the centre crop')
    return weights_digest(Path(path))


def fallback_face(im: Image.Image, detector: Path) -> tuple[np.ndarray, np.ndarray] | None:
    "YuNet's largest face in a photo MTCNN found none in: (box x0, y0, x1, y1; its 5 landmarks), or None."
    from .identity import _yunet
    y = _yunet(str(detector), Path(detector).stat().st_mtime)
    y.setInputSize(im.size)
    _, faces = y.detect(np.asarray(im)[:, :, ::-1].copy())
    if faces is None or not len(faces): return None
    face = faces[np.argmax(faces[:, 2] * faces[:, 3])]         # the largest
    x, top, w, h = face[:4]
    return np.array([x, top, x + w, top + h]), face[4:14].reshape(5, 2)


def crop_key(path: Path | str, cs: CropSettings) -> str:
    "Cache key: the source file's bytes plus every setting that changes the crop."
    h = hashlib.sha1(Path(path).read_bytes())
    h.update(_settings_tag(cs).encode())
    return h.hexdigest()


def _mtcnn(device: str) -> MTCNN:
    return MTCNN(keep_all=False, select_largest=True, device=device)


@functools.lru_cache(maxsize=1)
def _cpu_detector() -> MTCNN:
    return _mtcnn('cpu')


def _detect(mtcnn: MTCNN, images: list, stats: CropStats) -> list:
    """MTCNN boxes, probabilities and 5 landmarks per photo, None where it finds nothing. A batch that fails on a
    GPU is detected again on the CPU: a device error (out of memory, a CUDA fault) says nothing of the photos, so it
    must never leave a centre crop in the cache. On the CPU, a batch that fails (MTCNN cannot handle e.g. a 10x10
    photo) is retried photo by photo; a photo that still fails gets no box (centre crop)."""
    try:
        boxes, probs, points = mtcnn.detect(images, landmarks=True)
        return list(zip(boxes, probs, points))
    except Exception as e:  # noqa: BLE001 - facenet-pytorch raises RuntimeError, ValueError, IndexError on odd sizes
        import torch
        if torch.device(mtcnn.device).type != 'cpu':
            if not stats.device_retries:
                log.warning('face detection on %s failed (%s: %s): such batches are detected again on the CPU',
                            mtcnn.device, type(e).__name__, (str(e).splitlines() or [''])[0][:120])
            stats.device_retries += 1
            return _detect(_cpu_detector(), images, stats)
        if len(images) == 1: return [(None, [None], None)]
        return [_detect(mtcnn, [im], stats)[0] for im in images]


def landmarks_file(crop: Path | str) -> Path:
    "Where a face crop's 5 landmarks (eyes, nose tip, mouth corners; crop pixels) are cached beside it."
    return Path(crop).with_suffix('.lm.npy')


def save_landmarks(crop: Path | str, points: np.ndarray):
    with atomic_path(landmarks_file(crop)) as tmp:
        with open(tmp, 'wb') as fh: np.save(fh, np.asarray(points, np.float32))


def _commit(crop: Image.Image, dest: Path, size: int):
    """Write a crop atomically, and only after reading it back whole at the right size: a short write (full
    disk, file-size limit) must never enter the cache under its final name."""
    with atomic_path(dest) as tmp:
        crop.save(tmp, format='JPEG', quality=95)
        try:
            with Image.open(tmp) as back:
                back.load()
                ok = back.size == (size, size)
        except (OSError, SyntaxError, ValueError):
            ok = False
        if not ok:
            raise WriteError(f'{dest}: the crop did not read back whole (disk full or a file-size limit?); free '
                             f'space and run again: nothing incomplete was kept')


def _cache_file(cache: Path, key: str, kind: str) -> Path:
    return cache / key[:2] / f'{key}.{kind}.jpg'


def _whole_jpeg(p: Path) -> bool:
    "A JPEG that ends in its end-of-image marker: a cheap check that an older entry was not cut short."
    try:
        with open(p, 'rb') as fh:
            fh.seek(-2, 2)
            return fh.read(2) == b'\xff\xd9'
    except OSError:
        return False


def _cached(cache: Path, key: str) -> Path | None:
    for kind in (FACE, YUNET, CENTRE):
        p = _cache_file(cache, key, kind)
        if p.exists():
            if _whole_jpeg(p): return p
            p.unlink(missing_ok=True)      # cut short (written before entries were verified): crop it again
    return None


def centre_box(w: int, h: int, cs: CropSettings) -> tuple[float, float, float, float]:
    """The seed's fallback: a fallback_crop box on a fallback_ref photo, centred, scaled by the photo's shorter
    side so a square box stays square (300x300 on 384x512; 156x156 on a 200x200 face)."""
    scale = min(w, h) / min(cs.fallback_ref)
    cw, ch = min(cs.fallback_crop[0] * scale, w), min(cs.fallback_crop[1] * scale, h)
    return ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)


def face_box(box, w: int, h: int, margin: float) -> tuple[float, float, float, float]:
    "Square box around an MTCNN box, grown by `margin` x its side, kept inside the photo where it fits."
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + margin)
    side = min(side, max(w, h))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    x0 = min(max(cx - side / 2, 0), max(w - side, 0))
    y0 = min(max(cy - side / 2, 0), max(h - side, 0))
    return (x0, y0, x0 + side, y0 + side)


def detector(cs: CropSettings) -> MTCNN:
    import torch
    device = cs.device if cs.device != 'auto' else ('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not (torch.cuda.is_available() and
                                          int(device.partition(':')[2] or 0) < torch.cuda.device_count()):
        raise ConfigError(f'[crop] device = {cs.device}: torch sees {torch.cuda.device_count()} CUDA GPU(s) here; '
                          f'use auto or cpu')
    if device == 'mps' and not torch.backends.mps.is_available():
        raise ConfigError('[crop] device = mps: no Apple GPU here; use auto or cpu')
    return _mtcnn(device)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    return Progress(TextColumn('[bold]{task.description}'), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True)


def crop_images(files: list[str], cs: CropSettings, cache: Path, strict: bool = False, mtcnn: MTCNN | None = None,
                progress: bool = True,
                why: str = 'every eval photo needs an answer') -> tuple[dict[str, Path], CropStats]:
    """Crop each photo into the cache (skipping those already there) and return {file: crop path}.
    Unreadable photos are skipped and counted, or raise DataError naming the file when `strict` (eval photos, for
    the reason `why`).
    Photos are detected in batches of equal size (MTCNN batches need it); each crop is written atomically and
    verified, so a killed run resumes where it stopped and a cache entry is always whole."""
    cache = output_dir(cache, 'the crop cache (paths.cache)')
    stats = CropStats(total=len(files))

    def unreadable(f, reason: str, message: str):
        "Eval (strict): one error naming the photo. Training: skipped, counted, named with -v."
        if strict: raise DataError(message)
        stats.skipped['unreadable image'] += 1
        stats.skipped_files.append((f, reason))
        log.info('skipped %s: %s', f, reason)     # counted in the summary and skipped.csv; named with -v

    out, todo = _lookup(files, cs, cache, stats, unreadable)
    if todo:
        for sub in [cache, *(cache.glob('??'))]: remove_stray(sub)     # what killed runs left half-written
        t0 = time.perf_counter()
        _crop_missing(todo, cs, cache, mtcnn or detector(cs), out, stats, unreadable, progress, why)
        stats.seconds = time.perf_counter() - t0
    return out, stats


def _lookup(files, cs: CropSettings, cache: Path, stats: CropStats, unreadable) -> tuple[dict[str, Path], list]:
    "Crops already in the cache, and (file, key) of the photos still to crop."
    out, todo = {}, []
    for f in files:
        try:
            key = crop_key(f, cs)
        except OSError as e:       # a folder, a vanished or unreadable file where a photo was listed
            unreadable(f, f'unreadable file: {e}', f'{f}: cannot read this file ({e.strerror or e}). Replace it.')
            continue
        hit = _cached(cache, key)
        if hit is not None: out[f] = hit; stats.cached += 1
        else: todo.append((f, key))
    return out, todo


def _crop_missing(todo: list, cs: CropSettings, cache: Path, mtcnn: MTCNN, out: dict, stats: CropStats, unreadable,
                  progress: bool, why: str):
    "Detect faces in batches of photos of one size, then write each crop (and its landmarks) into the cache."
    by_size: dict[tuple[int, int], list] = defaultdict(list)
    with _progress() as bar:
        task = bar.add_task('cropping faces', total=len(todo), visible=progress)

        def flush(size):
            batch, by_size[size] = by_size[size], []
            for (f, key, im), (b, p, pts) in zip(batch, _detect(mtcnn, [im for _, _, im in batch], stats)):
                kind = FACE if b is not None and p[0] is not None and p[0] >= cs.min_prob else CENTRE
                if kind == FACE: b, pts = b[0], (None if pts is None else pts[0])
                elif cs.fallback_detector is not None and (rescued := fallback_face(im, cs.fallback_detector)):
                    kind, (b, pts) = YUNET, rescued
                box = tuple(round(v) for v in (centre_box(*im.size, cs) if kind == CENTRE else
                                               face_box(b, *im.size, cs.margin)))
                dest = _cache_file(cache, key, kind)
                _commit(im.crop(box).resize((cs.size, cs.size), Image.BICUBIC), dest, cs.size)
                if kind != CENTRE and pts is not None:    # for face-identity alignment (mcls.identity), in crop pixels
                    save_landmarks(dest, (pts - box[:2]) * (cs.size / (box[2] - box[0])))
                out[f] = dest
                if kind == CENTRE: stats.fallbacks += 1
                else: stats.faces += 1
                if kind == YUNET: stats.rescued += 1
            bar.advance(task, len(batch))

        for f, key in todo:
            try:
                im = open_rgb(f)
            except UnreadableImage as e:
                unreadable(f, f'unreadable image: {e}', f'{e}. Replace the file ({why}).')
                bar.advance(task)
                continue
            by_size[im.size].append((f, key, im))
            if len(by_size[im.size]) >= cs.batch: flush(im.size)
        for size in list(by_size):
            if by_size[size]: flush(size)


def attach_crops(df: pd.DataFrame, cs: CropSettings, cache: Path,
                 progress: bool = True) -> tuple[pd.DataFrame, CropStats]:
    """Crop every photo of an image table (train and/or eval) and add a `crop` column. Unreadable training photos
    are dropped (counted in the stats); an unreadable eval photo is an error, since a submission needs every row."""
    stats = CropStats()
    crops: dict[str, Path] = {}
    is_eval = df.split.eq('eval') if 'split' in df else pd.Series(False, index=df.index)
    for strict, part in ((False, df[~is_eval]), (True, df[is_eval])):
        if not len(part): continue
        got, s = crop_images(part.file.tolist(), cs, cache, strict=strict, progress=progress)
        crops.update(got)
        for k in ('total', 'cached', 'faces', 'fallbacks', 'device_retries', 'rescued', 'seconds'):
            setattr(stats, k, getattr(stats, k) + getattr(s, k))
        stats.skipped.update(s.skipped)
        stats.skipped_files += s.skipped_files
    df = df[df.file.isin(crops)].copy()
    df['crop'] = [str(crops[f]) for f in df.file]
    return df.reset_index(drop=True), stats
