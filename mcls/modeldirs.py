"""Model folders: where a learner is exported, and what a folder holds. Light (no torch): the CLI checks --models
and export paths with these before it imports the learners' modules."""
from __future__ import annotations

from pathlib import Path

from .atomic import output_dir, recover_dir
from .errors import UserError
from .settings import LEARNERS, TASKS, Settings

__all__ = ['export_dir_for', 'recover_folders', 'fold_dirs', 'learners_in', 'check_model_dir', 'check_export_dir',
           'check_outputs']


def export_dir_for(s: Settings, fold: int | None) -> Path:
    "Where a learner of `fold` is exported by default: models/fold{k}, or models/full for every photo (None)."
    return Path(s.paths.models) / ('full' if fold is None else f'fold{fold}')


def recover_folders(root: Path) -> Path:
    """Finish every model-folder swap a kill interrupted under `root` (a complete `.NAME.<pid>.new` waiting beside a
    missing NAME): what every reader of model folders does first, before it looks for or lists them."""
    root = Path(root)
    if root.is_dir():
        for new in root.glob('.*.*.new'):
            name = new.name[1:].rsplit('.', 2)[0]
            if name: recover_dir(root / name)
    return root


def fold_dirs(models: Path) -> list[Path]:
    "Every models/fold* folder, swaps that a kill interrupted finished first."
    return sorted(recover_folders(models).glob('fold*'))


def learners_in(model_dir: Path) -> tuple[str, ...]:
    "What a model folder holds: ('joint',), the task learners it has (in TASKS order), or () when none."
    d = recover_dir(model_dir)
    if (d / 'joint.json').exists(): return ('joint',)
    return tuple(t for t in TASKS if (d / f'{t}.json').exists())


def check_model_dir(model_dir: Path) -> tuple[str, ...]:
    "The learners a model folder must hold to predict: a joint learner or all three task learners."
    d = recover_dir(model_dir)
    if not d.is_dir(): raise UserError(f'{d}: no such model folder; give --models a folder that `mcls train` exported')
    held = learners_in(d)
    if not held:
        raise UserError(f'{d}: holds no learner (no joint.json or task .json files); train into it with '
                        f'`mcls train all --export-dir {d}` or give another --models')
    return held if held == ('joint',) else TASKS


def check_export_dir(dest: Path, learner: str) -> Path:
    """Refuse, before any work, an export folder that is a file or holds learners of the other kind: `predict`
    reads a joint learner or three task learners from a folder, never both, so one would be silently ignored."""
    dest = output_dir(dest, 'the export folder')
    if not dest.is_dir(): return dest
    kind = 'joint' if learner == 'joint' else 'task'
    other = [t for t in LEARNERS if (t == 'joint') != (kind == 'joint') and (recover_dir(dest) / f'{t}.json').exists()]
    if other:
        raise UserError(f'{dest} holds '
                        f'{"a joint learner" if kind == "task" else "task learners (" + ", ".join(other) + ")"}; '
                        f'a {learner} learner cannot share the folder (predict would use one kind and ignore the '
                        f'other): give --export-dir another folder, or delete {dest}')
    return dest


def check_outputs(s: Settings, learners: list[str], folds: list[int | None], export_dir: Path | None = None):
    "Before any work: every folder a training writes must be usable (no file in the way, no other kind of learner)."
    output_dir(s.paths.runs, 'the runs folder (paths.runs)')
    output_dir(s.paths.cache, 'the crop cache (paths.cache)')
    for k in folds:
        for t in learners: check_export_dir(export_dir or export_dir_for(s, k), t)
