"""Face identity: SFace embeddings (OpenCV Zoo, 128-d) of faces aligned by their 5 landmarks to the ArcFace
template, cached beside the crops. Landmarks come from the crop step's MTCNN, else from MTCNN or YuNet run on the
crop, else from the crop's geometry."""
from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_path
from .errors import ConfigError

__all__ = ['ZOO_FILE', 'TEMPLATE', 'ALIGNMENTS', 'quiet_opencv', 'check_weights', 'weights_digest', 'find_landmarks',
           'align', 'identity_embeddings']

log = logging.getLogger(__name__)
ZOO_FILE = 'face_recognition_sface_2021dec_int8bq.onnx'
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                     [70.7299, 92.2041]], np.float32)     # 112 x 112: eyes, nose tip, mouth corners (image left first)
SIDE = 112
WHERE = ('get it from the OpenCV Zoo (opencv_zoo, models/face_recognition_sface: '
         f'{ZOO_FILE}) and give its path')


def quiet_opencv():
    "OpenCV prints [ WARN ] lines on loading these models: stderr is for mcls's words."
    import cv2
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def check_weights(path: Path | None, setting: str = '[predict] identity_weights') -> Path:
    "The SFace file, or one error naming the setting and where to get it."
    if path is None or not Path(path).is_file():
        raise ConfigError(f'{setting} = {path}: not found; persons = auto needs the SFace face-identity weights: '
                          f'{WHERE}')
    return Path(path)


@functools.lru_cache(maxsize=4)
def _net(path: str, mtime: float):
    import cv2
    quiet_opencv()
    try:
        return cv2.dnn.readNetFromONNX(path)
    except cv2.error as e:
        raise ConfigError(f'[predict] identity_weights = {path}: OpenCV cannot load it ({str(e).strip()[:120]}); '
                          f'{WHERE}') from None


@functools.lru_cache(maxsize=4)
def _digest(path: str, mtime: float) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:10]


def weights_digest(path: Path) -> str:
    "A short digest of a weights file, read once per file and modification time."
    path = check_weights(path)
    return _digest(str(path), path.stat().st_mtime)


@functools.lru_cache(maxsize=4)
def _yunet(path: str, mtime: float):
    import cv2
    quiet_opencv()
    return cv2.FaceDetectorYN.create(path, '', (320, 320), score_threshold=0.6)


def _mtcnn():
    from .crop import MTCNN
    return MTCNN(keep_all=False, select_largest=True, device='cpu')


def find_landmarks(crops: list[str], detector: Path | None = None) -> tuple[np.ndarray, list[str]]:
    """(n, 5, 2) landmarks in crop pixels and where each came from: `crop` (the crop step's MTCNN, cached),
    `mtcnn` or `yunet` run on the crop (then cached), or `geometry` (the template scaled to the crop)."""
    from .crop import landmarks_file, save_landmarks
    out, source, todo = np.zeros((len(crops), 5, 2), np.float32), [''] * len(crops), []
    for i, c in enumerate(crops):
        f = landmarks_file(c)
        if f.exists():
            try:
                out[i], source[i] = np.load(f), 'crop'
                continue
            except (OSError, ValueError):
                f.unlink(missing_ok=True)
        todo.append(i)
    mtcnn = _mtcnn() if todo else None
    for i in todo:
        im = Image.open(crops[i]).convert('RGB')
        try:
            boxes, probs, pts = mtcnn.detect(im, landmarks=True)
        except Exception:  # noqa: BLE001 - facenet-pytorch fails on odd sizes: try the next way
            boxes = None
        if boxes is not None and probs[0] is not None and probs[0] >= 0.5:
            out[i], source[i] = pts[0], 'mtcnn'
        elif detector is not None and Path(detector).is_file():
            y = _yunet(str(detector), Path(detector).stat().st_mtime)
            y.setInputSize(im.size)
            _, faces = y.detect(np.asarray(im)[:, :, ::-1].copy())
            if faces is not None and len(faces):
                out[i], source[i] = faces[np.argmax(faces[:, 2] * faces[:, 3]), 4:14].reshape(5, 2), 'yunet'
        if not source[i]:
            out[i], source[i] = TEMPLATE * (np.array(im.size, np.float32) / SIDE), 'geometry'
        elif source[i] != 'geometry':
            save_landmarks(crops[i], out[i])
    return out, source


ALIGNMENTS = ('eyes', 'five', 'geometry')   # chosen on jittered known persons (mcls.persons.person_threshold)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    "The 2 x 3 similarity transform (rotation, uniform scale, shift) taking two points onto two points."
    s, d = src[1] - src[0], dst[1] - dst[0]
    z = complex(*d) / complex(*s) if np.any(s) else 1
    rot = np.array([[z.real, -z.imag], [z.imag, z.real]])
    return np.hstack([rot, (dst[0] - rot @ src[0])[:, None]])


def align(image: np.ndarray, points: np.ndarray, how: str = 'eyes') -> np.ndarray:
    """An RGB face warped onto the 112 x 112 template by a similarity transform: from the two eyes (`eyes`: a mask
    hides the nose and mouth corners, whose landmarks are then guesses), from all five landmarks (`five`, least
    median of squares), or from the crop's own geometry (`geometry`: the template scaled to the crop)."""
    import cv2
    pts = np.asarray(points, np.float32)
    if how == 'geometry': pts = TEMPLATE * (image.shape[1] / SIDE)
    m = None
    if how == 'five': m, _ = cv2.estimateAffinePartial2D(pts, TEMPLATE, method=cv2.LMEDS)
    if m is None: m = _similarity(pts[:2].astype(float), TEMPLATE[:2].astype(float))
    return cv2.warpAffine(image, np.asarray(m, np.float64), (SIDE, SIDE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)


def _cache_file(crop: str, digest: str, how: str) -> Path:
    return Path(crop).with_suffix(f'.id-{digest}-{how}.npy')


def identity_embeddings(crops: list[str], weights: Path, detector: Path | None = None, how: str = 'eyes',
                        batch: int = 32, stats: dict | None = None) -> np.ndarray:
    """Unit-length SFace embeddings (n, 128) of face crops aligned `how` (see align), cached beside each crop per
    weights file and alignment. `stats` (a dict) receives how many landmarks came from each source and how many
    embeddings were computed."""
    import cv2
    weights = check_weights(weights)
    key = (str(weights), weights.stat().st_mtime)
    digest, net = _digest(*key), _net(*key)
    out = np.zeros((len(crops), 128), np.float32)
    todo = []
    for i, c in enumerate(crops):
        f = _cache_file(c, digest, how)
        try:
            out[i] = np.load(f)
        except (OSError, ValueError):
            todo.append(i)
    pts, source = find_landmarks([crops[i] for i in todo], detector)
    for j in range(0, len(todo), batch):
        idx = todo[j:j + batch]
        faces = [align(np.asarray(Image.open(crops[i]).convert('RGB')), pts[k], how) for k, i in
                 enumerate(idx, start=j)]
        net.setInput(cv2.dnn.blobFromImages(faces, 1.0, (SIDE, SIDE), swapRB=False))   # RGB 0-255, as SFace wants
        emb = net.forward().reshape(len(idx), -1)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        for i, e in zip(idx, emb):
            out[i] = e
            with atomic_path(_cache_file(crops[i], digest, how)) as tmp:
                with open(tmp, 'wb') as fh: np.save(fh, e)
    if stats is not None:
        stats.update({'embedded': len(todo), 'cached': len(crops) - len(todo),
                      **{f'landmarks_{s}': source.count(s) for s in ('crop', 'mtcnn', 'yunet', 'geometry')}})
    return out
