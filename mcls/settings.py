"""Settings: settings.ini files layered into typed objects, with the source of every value."""
from __future__ import annotations

import configparser
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

__all__ = ['TASKS', 'LEARNERS', 'PACKAGED', 'SettingsError', 'Paths', 'CropSettings', 'SplitSettings', 'TaskSettings',
           'PredictSettings', 'Settings', 'load_settings', 'parse_overrides']

TASKS = ('mask', 'age', 'gender')          # what is scored
LEARNERS = (*TASKS, 'joint')               # what can be trained: one task, or one backbone with three heads
PACKAGED = Path(__file__).with_name('settings.ini')


class SettingsError(ValueError):
    "A setting that cannot be used; the message names the setting, where it came from and the fix."


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
    precision: str = 'auto'   # auto | fp32 | bf16 (autocast; logits go to fp32 before losses and softmax)
    channels_last: bool = True
    decode_at_size: bool = False   # JPEG crops decoded DCT-scaled to no less than size (mcls.decode), not whole
    freeze_epochs: int = 1    # fit = fine_tune: epochs of the head alone, counted in `epochs`
    lr_mult: float = 100.0    # fit = fine_tune: head rate / earliest body rate (body groups spaced geometrically)
    age_head: str = 'groups'  # groups: 3-class head | ordinal: one logit per year threshold (learns from years)
    task_weights: tuple[float, ...] | None = None   # joint: loss weights of mask, gender, age
    mix: str = 'none'         # none | mixup | cutmix (fastai callbacks, given to the fit call)
    old_weight: float = 1.0   # sampling weight of 60+ training photos (1: plain shuffling)


@dataclass
class PredictSettings:
    tta: bool
    tta_pipeline: str
    tta_passes: int
    batch: int
    out: Path
    tta_beta: float = 0.25    # weight of the plain pass in fastai's lerp (0.5 + one flip pass = a true flip TTA)
    persons: str = 'off'      # auto: group eval photos into persons and decide per person (mcls.persons)
    persons_margin: float = 2.0   # nats a 5/1/1 mask assignment may cost over the per-photo answers


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


def _tuple(cast):
    def conv(s: str):
        s = s.strip()
        return tuple(cast(v) for v in s.split(',')) if s else None
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
    'Path | None': _opt_path, 'tuple[int, int]': _tuple(int), 'tuple[float, ...] | None': _tuple(float),
    'int | None': _workers,
}
_TYPE_NAMES = {'int': int, 'float': float, 'str': str, 'bool': bool, 'Path': Path}


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
        except ValueError as e:
            src = sources.get(f'{section}.{f.name}', '?')
            raise SettingsError(f'[{section}] {f.name} = {values[f.name]!r} (from {src}) is invalid: {e}') from None
    return cls(**kwargs)


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    "`section.key=value` strings (the CLI's --set) into a dict."
    out = {}
    for item in items or []:
        key, sep, value = item.partition('=')
        if not sep or '.' not in key:
            raise SettingsError(f'--set {item!r}: expected section.key=value, e.g. --set mask.lr=1e-4')
        out[key.strip()] = value.strip()
    return out


def load_settings(config: Path | str | None = None, overrides: dict[str, str] | None = None,
                  cwd: Path | None = None) -> Settings:
    """Layer packaged defaults, ./settings.ini, `config` and `overrides` ('section.key' -> text).
    Relative paths are kept relative to the working directory, as the user typed them."""
    cwd = Path(cwd or Path.cwd())
    layers = [(PACKAGED, 'packaged defaults')]
    local = cwd / 'settings.ini'
    if local.exists() and local.resolve() != PACKAGED.resolve(): layers.append((local, str(local)))
    elif local.exists(): layers[0] = (PACKAGED, f'{local} (= packaged defaults)')
    if config is not None:
        config = Path(config)
        if not config.exists(): raise SettingsError(f'--config {config}: no such file')
        layers.append((config, str(config)))
    raw: dict[str, dict[str, str]] = {}
    sources: dict[str, str] = {}
    for path, label in layers:
        cp = configparser.ConfigParser(interpolation=None)
        try:
            cp.read(path)
        except configparser.Error as e:
            raise SettingsError(f'{path}: not a valid INI file ({e.message.splitlines()[0]})') from None
        for sec in cp.sections():
            for key, value in cp[sec].items():
                raw.setdefault(sec, {})[key] = value
                sources[f'{sec}.{key}'] = label
    for key, value in (overrides or {}).items():
        sec, _, name = key.partition('.')
        if sec not in raw or (name not in raw[sec] and not (sec in LEARNERS and name in raw.get('train', {}))):
            raise SettingsError(f'--set {key}: unknown setting; `mcls config` lists them all')
        raw[sec][name] = value
        sources[key] = 'command line'
    return _build(raw, sources)


def _build(raw: dict[str, dict[str, str]], sources: dict[str, str]) -> Settings:
    for sec in ('paths', 'crop', 'split', 'train', 'predict', *TASKS):
        if sec not in raw: raise SettingsError(f'settings: section [{sec}] is missing (see {PACKAGED})')
    tasks = {}
    for t in (t for t in LEARNERS if t in TASKS or t in raw):   # [joint] is optional in older files
        merged = {**raw['train'], **raw[t]}
        # a task's own value beats [train]; report where the winning value came from
        task_sources = {f'{t}.{k}': sources.get(f'{t}.{k}', sources.get(f'train.{k}', '?')) for k in merged}
        tasks[t] = _convert(TaskSettings, t, merged, task_sources, task=t)
    s = Settings(paths=_convert(Paths, 'paths', raw['paths'], sources),
                 crop=_convert(CropSettings, 'crop', raw['crop'], sources),
                 split=_convert(SplitSettings, 'split', raw['split'], sources),
                 tasks=tasks, predict=_convert(PredictSettings, 'predict', raw['predict'], sources),
                 sources=sources, raw=raw)
    if s.split.by not in ('person', 'image'):
        raise SettingsError(f"[split] by = {s.split.by!r}: use 'person' or 'image'")
    return s
