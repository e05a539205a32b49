"""Settings: settings.ini files layered into typed objects, with the source of every value."""
from __future__ import annotations

import configparser
import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import SettingsError
from .labels import LABEL_TASKS

__all__ = ['TASKS', 'LEARNERS', 'PACKAGED', 'GPU_PROFILE', 'cpu_recipe_on_gpu', 'CHOICES', 'LIMITS', 'Range',
           'check_value', 'did_you_mean', 'parse_photos_per_person', 'SettingsError', 'Paths', 'CropSettings',
           'SplitSettings', 'TaskSettings', 'PredictSettings', 'Settings', 'load_settings', 'parse_overrides',
           'learners_for']

TASKS = LABEL_TASKS                        # what is scored: the 18-class layout's tasks, in its order
LEARNERS = (*TASKS, 'joint')               # what can be trained: one task, or one backbone with three heads
PACKAGED = Path(__file__).with_name('settings.ini')
GPU_PROFILE = 'configs/gpu.ini'            # the GPU profile, in a checkout of mcls


@dataclass(frozen=True)
class Range:
    "Allowed numbers: finite, lo <= v <= hi (strict with lo_open / hi_open); None is unbounded."
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v) -> bool:
        return (math.isfinite(v) and (self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)) and
                (self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)))

    def __str__(self):
        lo = None if self.lo is None else f'{">" if self.lo_open else ">="} {self.lo:g}'
        hi = None if self.hi is None else f'{"<" if self.hi_open else "<="} {self.hi:g}'
        return ' and '.join(x for x in (lo, hi) if x)


# Every option's allowed values, in one place: settings validation, the CLI's choices and its help read them.
# Keys of the learner sections ([mask], [age], [gender], [joint]) are those of [train].
CHOICES = {
    'split.by': ('person', 'image'),
    'train.fit': ('one_cycle', 'fine_tune'),
    'train.loss': ('ce', 'focal'),
    'train.precision': ('auto', 'fp32', 'bf16', 'fp16'),
    'train.mix': ('none', 'mixup', 'cutmix'),
    'train.age_head': ('groups', 'ordinal', 'dist'),
    'train.mode': ('tasks', 'joint'),
    'predict.persons': ('auto', 'off'),
    'predict.engine': ('torch', 'onnx'),
    'predict.persons_tasks': LABEL_TASKS,
    'train.track': ('tensorboard', 'wandb'),
    'train.consistency_target': ('mean', 'unmasked'),
}
POS, NONNEG, ONE_UP, UNIT = Range(0, lo_open=True), Range(0), Range(1), Range(0, 1)
LIMITS = {
    'crop.size': Range(16), 'crop.margin': Range(0, 5), 'crop.min_prob': UNIT, 'crop.batch': ONE_UP,
    'crop.fallback_crop': ONE_UP, 'crop.fallback_ref': ONE_UP,
    'split.folds': Range(2),
    'train.batch': ONE_UP, 'train.size': Range(16), 'train.wd': NONNEG,
    'train.label_smoothing': Range(0, 1, hi_open=True),
    'train.gamma': NONNEG, 'train.class_weights': NONNEG, 'train.workers': NONNEG, 'train.threads': ONE_UP,
    'train.lr': POS,
    'train.epochs': ONE_UP, 'train.full_epochs': ONE_UP, 'train.boundary': Range(31, 120),
    'train.freeze_epochs': NONNEG, 'train.lr_mult': ONE_UP, 'train.task_weights': NONNEG,
    # a 60+ photo's sampling weight; under photos_per_person its repeat count a 60+ person is drawn, so bounded
    'train.old_weight': Range(1, 10),
    'train.ema': Range(0, 1, hi_open=True), 'train.early_sizes': Range(16), 'train.consistency': NONNEG,
    'predict.tta_passes': ONE_UP, 'predict.batch': ONE_UP, 'predict.tta_beta': UNIT, 'predict.persons_margin': NONNEG,
    'predict.tta_scales': Range(0.5, 2),
}
DEVICE = re.compile(r'auto|cpu|cuda(:\d+)?|mps')     # [crop] device
PER_PERSON = 7                                       # photos of a person: [train] photos_per_person = all or 1-7


def parse_photos_per_person(value: str) -> int | None:
    "[train] photos_per_person: `all` -> None (every photo, every epoch), or k in 1..7; else a ValueError."
    v = str(value).strip().lower()
    if v == 'all': return None
    if v.isdigit() and 1 <= int(v) <= PER_PERSON: return int(v)
    raise ValueError(f'use all or a number 1-{PER_PERSON}')


@dataclass
class Paths:
    data: Path        # competition layout root
    cache: Path       # face-crop cache
    runs: Path        # one folder per training run
    models: Path      # exported learners
    reports: Path     # EDA, evaluation and interpretation output
    corrections: Path | None  # label corrections CSV


@dataclass
class CropSettings:
    size: int                          # side of the cached square crop
    margin: float                      # context around the face box, fraction of the box side
    min_prob: float                    # MTCNN confidence below which the centre crop is used
    batch: int
    device: str                        # auto, cpu, cuda, cuda:1 ...
    fallback_crop: tuple[int, int]     # centre crop (w, h) ...
    fallback_ref: tuple[int, int]      # ... on a photo of this (w, h), scaled to the actual photo
    fallback_detector: Path | None = None   # YuNet ONNX: frames the photos MTCNN finds no face in as a detection does


@dataclass
class SplitSettings:
    folds: int
    by: str           # person | image
    seed: int


@dataclass
class TaskSettings:
    task: str
    arch: str
    pretrained: bool
    weights: Path | None      # local ImageNet weights for timm (pretrained_cfg_overlay file)
    batch: int
    size: int
    seed: int
    fit: str                  # one_cycle | fine_tune
    wd: float
    label_smoothing: float
    gamma: float              # focal loss focusing parameter
    class_weights: tuple[float, ...] | None
    workers: int | None       # None: one per core
    lr: float
    epochs: int
    full_epochs: int
    loss: str                 # ce | focal
    pipeline: str             # albumentations pipeline name (mcls.augment.PIPELINES)
    boundary: int = 60        # age task only: training-target boundary of the 60+ group
    # defaults below keep settings files written before these keys existed loadable
    mode: str = 'tasks'       # what `train all` trains: tasks (three learners) | joint (one backbone, three heads)
    precision: str = 'auto'   # auto | fp32 | bf16 | fp16 (autocast; logits go to fp32 before losses and softmax)
    channels_last: bool = True
    decode_at_size: bool = False   # JPEG crops decoded DCT-scaled to no less than size (mcls.decode), not whole
    freeze_epochs: int = 1    # fit = fine_tune: epochs of the head alone, counted in `epochs`
    lr_mult: float = 100.0    # fit = fine_tune: head rate / earliest body rate (body groups spaced geometrically)
    age_head: str = 'groups'  # groups: 3-class head | ordinal: a logit per year threshold | dist: a logit per year
    task_weights: tuple[float, ...] | None = None   # joint: loss weights of mask, gender, age
    mix: str = 'none'         # none | mixup | cutmix (fastai callbacks, given to the fit call)
    old_weight: float = 1.0   # sampling weight of 60+ training photos (1: plain shuffling)
    partial_weights: bool = False   # accept local weights that fill only some of the backbone's tensors
    threads: int | None = None      # torch threads while training (None: auto, a share of the cores among mcls jobs)
    reproducible: bool = False      # cuDNN deterministic, autotuner off (GPU runs repeat to the bit; slower)
    photos_per_person: str = 'all'  # all, or k: each epoch draws k photos of every training person (mcls.sampling)
    ema: float = 0.0          # per-step decay of a weight average (timm ModelEmaV3) that validates and exports; 0 off
    early_sizes: tuple[int, ...] | None = None   # progressive resizing: the first epochs' sizes; the rest at size
    track: tuple[str, ...] = ()    # experiment trackers of the fit: tensorboard, wandb (mcls.tracking)
    consistency: float = 0.0       # joint: weight of the person-consistency term on age and gender (mcls.joint)
    consistency_target: str = 'mean'   # what the term pulls to: the person's photos' mean, or their unmasked photo


@dataclass
class PredictSettings:
    tta: bool
    tta_pipeline: str
    tta_passes: int
    batch: int
    out: Path
    tta_beta: float = 0.25    # weight of the plain pass in fastai's lerp (0.5 + one flip pass = a true flip TTA)
    tta_scales: tuple[float, ...] | None = None   # TTA at each of these multiples of the learner's size, averaged
    persons: str = 'off'      # auto: group eval photos into persons and decide per person (mcls.persons)
    engine: str = 'torch'     # torch | onnx: onnxruntime on the folder's <task>.onnx (mcls export-onnx)
    persons_margin: float = 2.0   # nats a 5/1/1 mask assignment may cost over the per-photo answers
    persons_tasks: tuple[str, ...] = LABEL_TASKS   # tasks decided per person with persons = auto
    identity_weights: Path | None = Path('face_recognition_sface_2021dec_int8bq.onnx')   # SFace (OpenCV Zoo)
    detector_weights: Path | None = Path('face_detection_yunet_2023mar_int8bq.onnx')     # YuNet, where present


@dataclass
class Settings:
    paths: Paths
    crop: CropSettings
    split: SplitSettings
    tasks: dict[str, TaskSettings]
    predict: PredictSettings
    sources: dict[str, str] = field(default_factory=dict)   # 'section.key' -> where the value came from
    raw: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_ini(self) -> str:
        "The resolved values as an INI text (saved with every run and exported model)."
        cp = configparser.ConfigParser(interpolation=None)
        cp.read_dict(self.raw)
        from io import StringIO
        buf = StringIO()
        cp.write(buf)
        return buf.getvalue()

    @property
    def threads(self) -> int | None:
        "[train] threads, for commands that train nothing (predict)."
        return _workers(self.raw['train'].get('threads', 'auto'))


def cpu_recipe_on_gpu(s: Settings, learners: list[str], cuda: bool) -> str | None:
    "One line for a user who trains on a CUDA GPU with the CPU recipe's size and batch, naming the switch; else None."
    packaged = all('packaged defaults' in s.sources.get(f'{t}.{k}', '') for t in learners for k in ('size', 'batch'))
    if not (cuda and packaged): return None
    ts = s.tasks[learners[0]]
    return (f'a CUDA GPU is here but the CPU recipe is in force ({ts.size} px, batch {ts.batch}): add '
            f'`--config {GPU_PROFILE}` for the GPU profile (docs/scaling.md)')


def learners_for(task: str, s: Settings) -> list[str]:
    "What `train TASK` trains: one learner; for `all`, the three task learners or the joint one ([train] mode)."
    if task == 'all': return ['joint'] if s.tasks['mask'].mode == 'joint' else list(TASKS)
    if task not in s.tasks: raise SettingsError(f"unknown learner {task!r}: use {', '.join(s.tasks)} or all")
    return [task]


def _tuple(cast, n: int | None = None):
    def conv(s: str):
        s = s.strip()
        if not s and n is None: return None
        out = tuple(cast(v) for v in s.split(',')) if s else ()
        if n is not None and len(out) != n: raise ValueError(f'needs {n} comma-separated values, got {len(out)}')
        return out
    return conv


def _bool(s: str) -> bool:
    v = s.strip().lower()
    if v in ('1', 'true', 'yes', 'on'): return True
    if v in ('0', 'false', 'no', 'off'): return False
    raise ValueError(f'not a boolean: {s!r}')


def _opt_path(s: str): return Path(s.strip()) if s.strip() else None
def _workers(s: str): return None if s.strip().lower() == 'auto' else int(s)


# how each typed field is parsed from its INI text
_CONVERTERS = {
    int: int, float: float, str: str.strip, bool: _bool, Path: lambda s: Path(s.strip()),
    'Path | None': _opt_path, 'tuple[int, int]': _tuple(int, 2), 'tuple[float, ...] | None': _tuple(float),
    'tuple[str, ...]': _tuple(str.strip),
    'tuple[int, ...] | None': _tuple(int),
    'int | None': _workers,
}
_TYPE_NAMES = {'int': int, 'float': float, 'str': str, 'bool': bool, 'Path': Path}


def did_you_mean(word: str, names, shown: str = '{}') -> str:
    """' (did you mean X?)' for the valid name closest to a misspelt one (difflib's ratio >= 0.6), else ''; `shown`
    formats the name found (e.g. with its section)."""
    close = difflib.get_close_matches(str(word), [str(n) for n in names], n=1)
    return f' (did you mean {shown.format(close[0])}?)' if close else ''


def _table_key(section: str, name: str) -> str:
    "The key of CHOICES / LIMITS for a setting: learner sections share [train]'s."
    return f'train.{name}' if section in LEARNERS else f'{section}.{name}'


def check_value(section: str, name: str, value):
    "Raise ValueError when `value` of `[section] name` is not allowed by CHOICES / LIMITS (tuples: each element)."
    key = _table_key(section, name)
    if key in CHOICES and value is not None:
        for v in (value if isinstance(value, tuple) else (value,)):
            if v not in CHOICES[key]:
                raise ValueError(f'use one of {", ".join(CHOICES[key])}{did_you_mean(v, CHOICES[key])}')
    if key == 'crop.device' and not DEVICE.fullmatch(value): raise ValueError('use auto, cpu, cuda or cuda:N')
    if key == 'train.photos_per_person': parse_photos_per_person(value)
    lim = LIMITS.get(key)
    if lim is not None and value is not None:
        for v in (value if isinstance(value, tuple) else (value,)):
            if v not in lim:
                raise ValueError(f'must be {lim}' if math.isfinite(v) else f'must be a finite number, {lim}')


def _convert(cls, section: str, values: dict[str, str], sources: dict[str, str], **extra):
    kwargs = dict(extra)
    for f in fields(cls):
        if f.name in kwargs: continue
        if f.name not in values:
            if f.default is not dataclasses.MISSING: continue
            raise SettingsError(f'[{section}] {f.name} is missing: add it to settings.ini (see {PACKAGED})')
        conv = _CONVERTERS[_TYPE_NAMES.get(f.type, f.type)]
        try:
            kwargs[f.name] = conv(values[f.name])
            check_value(section, f.name, kwargs[f.name])
        except ValueError as e:
            src = sources.get(f'{section}.{f.name}', '?')
            raise SettingsError(f'[{section}] {f.name} = {values[f.name]!r} (from {src}) is invalid: {e}') from None
    return cls(**kwargs)


# the keys each section may hold (a misspelt key in a file is an error, as it is with --set)
_SECTIONS = {'paths': Paths, 'crop': CropSettings, 'split': SplitSettings, 'predict': PredictSettings,
             **{sec: TaskSettings for sec in ('train', *LEARNERS)}}


def _known_keys(section: str) -> set[str] | None:
    cls = _SECTIONS.get(section)
    return None if cls is None else {f.name for f in fields(cls)} - {'task'}


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    "`section.key=value` strings (the CLI's --set) into a dict."
    out = {}
    for item in items or []:
        key, sep, value = item.partition('=')
        if not sep or '.' not in key:
            raise SettingsError(f'--set {item!r}: expected section.key=value, e.g. --set mask.lr=1e-4')
        out[key.strip()] = value.strip()
    return out


def _read_layer(path: Path) -> dict[str, dict[str, str]]:
    "One settings file, checked: every section and key known."
    if path.is_dir():
        raise SettingsError(f'{path}: a folder, not a settings file; give an INI file (see {PACKAGED})')
    if not path.is_file():
        raise SettingsError(f'{path}: not a regular file (a pipe or device would be read forever); give an INI file')
    cp = configparser.ConfigParser(interpolation=None)
    try:
        cp.read(path, encoding='utf-8-sig')        # a byte-order mark from a Windows editor is not a section
    except configparser.Error as e:
        raise SettingsError(f'{path}: not a valid INI file ({e.message.splitlines()[0]})') from None
    except UnicodeDecodeError as e:
        raise SettingsError(f'{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8') from None
    layer = {}
    for sec in cp.sections():
        known = _known_keys(sec)
        if known is None:
            raise SettingsError(f'{path}: unknown section [{sec}]{did_you_mean(sec, _SECTIONS)}; the sections are '
                                f'{", ".join(_SECTIONS)}')
        for key in cp[sec]:
            if key not in known:
                raise SettingsError(f'{path}: [{sec}] {key}: unknown setting{did_you_mean(key, known)}; '
                                    f'`mcls config` lists them all')
        layer[sec] = dict(cp[sec].items())
    return layer


def _override_layer(overrides: dict[str, str]) -> dict[str, dict[str, str]]:
    "--set's 'section.key' -> text, checked against the keys each section may hold."
    layer: dict[str, dict[str, str]] = {}
    for key, value in overrides.items():
        sec, _, name = key.partition('.')
        known = _known_keys(sec)
        if known is None or name not in known:
            hint = (did_you_mean(sec, _SECTIONS, f'{{}}.{name}') if known is None else
                    did_you_mean(name, known, f'{sec}.{{}}'))
            raise SettingsError(f'--set {key}: unknown setting{hint}; `mcls config` lists them all')
        layer.setdefault(sec, {})[name] = value
    return layer


def load_settings(config: Path | str | None = None, overrides: dict[str, str] | None = None,
                  cwd: Path | None = None, standalone: bool = False) -> Settings:
    """Layer packaged defaults, ./settings.ini, `config` and `overrides` ('section.key' -> text). A learner's value
    comes from the last layer that sets it under [train] or under the learner's own section (within one layer the
    learner's section wins). `standalone`: `config` alone, as a run or export folder recorded it: a key it lacks
    (it was written before the key existed) takes the value mcls had before the key, never today's default.
    Relative paths are kept relative to the working directory, as the user typed them."""
    cwd = Path(cwd or Path.cwd())
    files = []
    if not standalone:
        files.append((PACKAGED, 'packaged defaults'))
        local = cwd / 'settings.ini'
        if local.exists() and local.resolve() != PACKAGED.resolve(): files.append((local, str(local)))
        elif local.exists(): files[0] = (PACKAGED, f'{local} (= packaged defaults)')
    if config is not None:
        config = Path(config)
        if not config.exists(): raise SettingsError(f'--config {config}: no such file')
        files.append((config, str(config)))
    layers = [(label, _read_layer(path)) for path, label in files]
    if overrides: layers.append(('command line', _override_layer(overrides)))
    raw: dict[str, dict[str, str]] = {}
    sources: dict[str, str] = {}
    for label, layer in layers:
        for sec, values in layer.items():
            if sec in LEARNERS: continue
            for key, value in values.items():
                raw.setdefault(sec, {})[key] = value
                sources[f'{sec}.{key}'] = label
    for t in LEARNERS:      # every learner section holds its resolved values, so a saved file stands alone
        for label, layer in layers:
            for sec in ('train', t):
                for key, value in layer.get(sec, {}).items():
                    raw.setdefault(t, {})[key] = value
                    sources[f'{t}.{key}'] = label
    return _build(raw, sources)


def _build(raw: dict[str, dict[str, str]], sources: dict[str, str]) -> Settings:
    for sec in ('paths', 'crop', 'split', 'train', 'predict', *TASKS):
        if sec not in raw: raise SettingsError(f'settings: section [{sec}] is missing (see {PACKAGED})')
    tasks = {t: _convert(TaskSettings, t, raw[t], sources, task=t) for t in LEARNERS if t in raw}
    s = Settings(paths=_convert(Paths, 'paths', raw['paths'], sources),
                 crop=_convert(CropSettings, 'crop', raw['crop'], sources),
                 split=_convert(SplitSettings, 'split', raw['split'], sources),
                 tasks=tasks, predict=_convert(PredictSettings, 'predict', raw['predict'], sources),
                 sources=sources, raw=raw)
    return s
