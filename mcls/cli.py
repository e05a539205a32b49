"""The `mcls` command line: a thin typer layer over the library functions."""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from .errors import RANKS_DIR, FixableError, UserError
from .terminal import interactive
from .settings import (CHOICES, LEARNERS, TASKS, Settings, SettingsError, cpu_recipe_on_gpu, learners_for,
                       load_settings,
                       parse_overrides)

__all__ = ['app', 'run']


class _Plain:
    "Help pages without Python types: none beside --help (typer shows `<bool>`) or a list argument (`<list[Path]>`)."
    def get_help_option(self, ctx):
        opt = super().get_help_option(ctx)
        if opt is not None: opt.metavar = ''
        return opt

    def format_help(self, ctx, formatter):
        for p in self.params:
            if isinstance(p, typer.core.TyperArgument) and p.nargs != 1: p.display_type_rich = lambda ctx: None
        return super().format_help(ctx, formatter)


class Command(_Plain, typer.core.TyperCommand): pass
class Group(_Plain, typer.core.TyperGroup): pass


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, cls=Group,
                  help='Face photos -> mask state x gender x age group, with fastai. Settings: settings.ini.')
command = partial(app.command, cls=Command)
console = Console() if interactive() else Console(width=160)   # logs: no truncated tables



def _help_settings() -> Settings | None:
    "The settings in force here (packaged defaults and ./settings.ini), for help texts; None where they do not load."
    try:
        return load_settings()
    except (SettingsError, OSError):
        return None


_HELP = _help_settings()


def _tta_note(ps) -> str:
    "What a TTA prediction ran: passes of its pipeline beside the plain one, at which multiples of the size."
    scales = ', '.join(f'{x:g}' for x in ps.tta_scales or (1.0,))
    return f'TTA: {ps.tta_pipeline} x{ps.tta_passes} and plain, at {scales} x the training size'


def _now(key: str) -> str:
    """For an option's help: the value in force of setting `key` ('section.key', or a bare [train] key, shown per
    learner where they differ) and the file it comes from: ' (now 6 from settings.ini)'."""
    if _HELP is None: return ''
    if '.' in key:
        sec, name = key.split('.')
        vals, srcs = {sec: _HELP.raw[sec].get(name, '')}, {_HELP.sources.get(key, '?')}
    else:
        vals = {t: _HELP.raw[t].get(key, _HELP.raw['train'].get(key, '')) for t in LEARNERS if t in _HELP.raw}
        srcs = {_HELP.sources.get(f'{t}.{key}', _HELP.sources.get(f'train.{key}', '?')) for t in vals}
    shown = next(iter(vals.values())) if len(set(vals.values())) == 1 else \
        ', '.join(f'{t} {v}' for t, v in vals.items())
    where = ', '.join(sorted(Path(s.split(' (')[0]).name if '/' in s else s for s in srcs))
    return f' (now {shown or "empty"} from {where})'


def _old(name: str, *, kind=Optional[Path]):
    "An option's old spelling, kept working for scripts but left out of the help (see `_renamed`)."
    return Annotated[kind, typer.Option(name, hidden=True, help=f'old spelling of {name}')]


OldOut, OldPersons = _old('--out'), _old('--persons', kind=Optional[int])


def _renamed(new, old):
    "The value of an option, given under its new name or its old one."
    return new if old is None else old


# One meaning per option name across commands: --out a file the command writes, --out-dir a folder, --plot a PNG,
# --train-persons / --eval-persons counts of synthetic persons, --persons predict's mode, --models model folder(s).
# panels of the option lists; metavars in typer's <kind> style; flags show none
SETTINGS, DATA, MODEL, SCHEDULE, OUTPUT, RANKS = 'Settings', 'Data', 'Model', 'Schedule', 'Output', 'Distributed'
FLAG = ''
LR_FIND_MIN_IT = 25    # fastai's slide suggestion needs 16 rates after lr_find drops the first tenth and the last 5
ConfigOpt = Annotated[Optional[Path], typer.Option('--config', '-c', help='settings file layered over ./settings.ini',
                                                   metavar='<path>', rich_help_panel=SETTINGS)]
SetOpt = Annotated[Optional[list[str]], typer.Option('--set', '-s', help='override any setting: section.key=value',
                                                     metavar='<section.key=value>', rich_help_panel=SETTINGS)]
DataOpt = Annotated[Optional[Path], typer.Option('--data', '-d', help=f'competition layout root{_now("paths.data")}',
                                                 metavar='<path>', rich_help_panel=DATA)]
FoldOpt = Annotated[int, typer.Option(help='the validation fold (the learner that did not train on it)',
                                      rich_help_panel=DATA)]
WorkersOpt = Annotated[Optional[int], typer.Option(help=f'DataLoader workers{_now("workers")}',
                                                   rich_help_panel=SCHEDULE)]
ProcessesOpt = Annotated[int, typer.Option(min=1,
                                           help='ranks on this machine, one job (DistributedDataParallel: gloo on '
                                                        'CPU, NCCL with one GPU each); see docs/scaling.md',
                                           rich_help_panel=RANKS)]
PredictProcessesOpt = Annotated[int, typer.Option('--processes', min=1, help='ranks on this machine, each predicting a '
                                                  'share of the eval photos (one GPU each); rank 0 writes',
                                                  rich_help_panel=RANKS)]


def _settings(config, sets, data=None, **named) -> Settings:
    "Resolve settings: files, then --set, then the named flags (None means 'not given')."
    overrides = parse_overrides(sets)
    if data is not None: overrides['paths.data'] = str(data)
    overrides.update({k: str(v) for k, v in named.items() if v is not None})
    return load_settings(config, overrides)


def _choices(name: str, key: str) -> type[Enum]:
    "A CLI choice type from the one table of allowed values (mcls.settings.CHOICES)."
    return Enum(name, {c: c for c in CHOICES[key]}, type=str)


LossName = _choices('LossName', 'train.loss')
PersonsMode = _choices('PersonsMode', 'predict.persons')
Engine = _choices('Engine', 'predict.engine')


class Split(str, Enum):
    train = 'train'
    eval = 'eval'
    all = 'all'


Task = Enum('Task', {t: t for t in TASKS}, type=str)                           # scored tasks
TaskOrAll = Enum('TaskOrAll', {t: t for t in (*TASKS, 'all')}, type=str)
Learner = Enum('Learner', {t: t for t in LEARNERS}, type=str)                  # what can be trained
LearnerOrAll = Enum('LearnerOrAll', {t: t for t in (*LEARNERS, 'all')}, type=str)
PickleOpt = Annotated[bool, typer.Option('--pickle', help="load fastai's .pkl (runs code it holds: trusted folders "
                                                          "only); default: rebuild from .safetensors + settings",
                                         metavar=FLAG, rich_help_panel=MODEL)]


def _table(title: str, columns, rows) -> Table:
    t = Table(title=title, title_justify='left')
    for c in columns:
        t.add_column(c, justify='right' if c[:1].islower() and c not in ('setting', 'source', 'value') else 'left')
    for r in rows: t.add_row(*[f'{v:.4f}' if isinstance(v, float) else escape(str(v)) for v in r])
    return t


def _version(show: bool):
    if show:
        from . import __version__
        console.print(f'mcls {__version__}')
        raise typer.Exit()


@app.callback()
def main(verbose: Annotated[bool, typer.Option('--verbose', '-v', help='log every skipped file and step',
                                               metavar=FLAG)] = False,
         version: Annotated[bool, typer.Option('--version', help='print the version and exit', metavar=FLAG,
                                               callback=_version, is_eager=True)] = False):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format='%(message)s',
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False)])


@command()
def config(config: ConfigOpt = None, set: SetOpt = None):
    "Print the resolved settings and where each value came from."
    s = _settings(config, set)
    rows = []
    for sec, values in s.raw.items():
        for key, value in values.items():
            rows.append((f'{sec}.{key}', value, s.sources.get(f'{sec}.{key}', '?')))
    console.print(_table('settings', ('setting', 'value', 'source'), rows))
    console.print(f"[dim]{escape('Task sections ([mask], [age], [gender], [joint]) inherit [train]; override with')} "
                  f"--set mask.lr=1e-4 or a task flag.[/]")


@command()
def synth(out: Annotated[Path, typer.Argument(help='folder to write (replaced)')],
          train_persons: Annotated[int, typer.Option(min=1, help='training persons (7 photos each)')] = 40,
          eval_persons: Annotated[int, typer.Option(min=1, help='eval persons (7 photos each)')] = 10,
          persons: OldPersons = None,
          seed: Annotated[int, typer.Option(min=0, help='seed of the drawing')] = 0,
          awkward: Annotated[bool, typer.Option(help='add hidden, truncated, grey, RGBA, CMYK, EXIF cases',
                                                metavar=FLAG)] = False):
    "Write a small synthetic data set in the competition layout (drawn faces; no downloads)."
    from .synth import make_dataset
    info = make_dataset(out, _renamed(train_persons, persons), eval_persons, seed=seed, awkward=awkward)
    console.print(f'{info.root}: {info.persons} persons, {info.train_images} training and '
                  f'{info.eval_images} eval photos')


def _load(s: Settings, with_eval=True):
    from .dataset import LoadReport, load_images, load_train
    report = LoadReport()
    df = (load_images if with_eval else load_train)(s.paths.data, s.paths.corrections, report=report)
    return df, report


def _load_summary(report) -> Table:
    rows = [('persons', report.persons), ('training photos', report.images), ('eval photos', report.eval_images),
            ('label fixes applied (corrections rows)', report.correction_rows),
            ('photos changed by the fixes', report.corrections),
            ('persons without 7 photos', report.incomplete_persons)]
    if report.crops: rows.append(('centre-crop fallbacks (no face found)',
                                  f'{report.crop_fallbacks} ({report.crop_fallbacks / report.crops:.1%})'))
    rows += [(f'skipped: {k}', v) for k, v in sorted(report.skipped.items())]
    return _table('data', ('item', 'count'), rows)


@command()
def eda(config: ConfigOpt = None, set: SetOpt = None, data: DataOpt = None,
        out_dir: Annotated[Optional[Path], typer.Option(help='plot folder (default: paths.reports/eda)',
                                                        metavar='<path>', rich_help_panel=OUTPUT)] = None,
        out: OldOut = None):
    "Distributions of gender, age, mask and the 18 classes: rich tables and PNG plots."
    from .atomic import output_dir
    from .eda import distributions, plot_distributions
    s = _settings(config, set, data)
    out = output_dir(_renamed(out_dir, out) or s.paths.reports / 'eda', 'the plot folder')
    df, report = _load(s)
    console.print(_load_summary(report))
    boundary = s.tasks['age'].boundary
    for title, t in distributions(df, boundary).items():
        console.print(_table(title, ('value', 'count', 'share'), t.itertuples(index=False)))
    for p in plot_distributions(df, out, boundary): console.print(f'wrote {p}')


def crop_summary(stats) -> Table:
    rows = [('photos', stats.total), ('already cached', stats.cached), ('faces found', stats.faces),
            ('of them by the fallback detector ([crop] fallback_detector)', stats.rescued),
            ('centre-crop fallbacks', stats.fallbacks),
            ('fallback share', f'{stats.fallbacks / max(stats.cropped, 1):.1%}'),
            ('batches detected again on the CPU (GPU errors)', stats.device_retries),
            ('seconds cropping', f'{stats.seconds:.1f}'),
            ('photos/s', f'{stats.images_per_s:.1f}' if stats.cropped else '- (all cached)')]
    rows += [(f'skipped: {k}', v) for k, v in sorted(stats.skipped.items())]
    return _table('crop', ('item', 'count'), rows)


@command()
def crop(config: ConfigOpt = None, set: SetOpt = None, data: DataOpt = None,
         split: Annotated[Split, typer.Option(help='which photos')] = Split.all):
    "Crop faces (MTCNN, centre-crop fallback) of train and eval photos into the cache; reruns do nothing."
    from .crop import attach_crops
    split = split.value
    s = _settings(config, set, data)
    df, report = _load(s, with_eval=split != 'train')
    if split != 'all': df = df[df.split.eq(split)] if 'split' in df else df.assign(split='train')
    console.print(_load_summary(report))
    t0 = time.perf_counter()
    _, stats = attach_crops(df, s.crop, s.paths.cache)
    console.print(crop_summary(stats))
    console.print(f'cache: {s.paths.cache}  ({time.perf_counter() - t0:.1f} s in all)')


TaskArg = Annotated[Task, typer.Argument(help='the task')]
LearnerArg = Annotated[LearnerOrAll, typer.Argument(help='joint = one backbone, three heads; all: the \\[train] '
                                                         'mode decides whether it means the three tasks or joint')]
ModelsOpt = Annotated[Optional[list[Path]], typer.Option('--models', '-m', help='model folder(s); several are averaged',
                                                         metavar='<folder>', rich_help_panel=MODEL)]


def _task_overrides(tasks, **named) -> dict[str, str]:
    "Named flags apply to the task sections being trained."
    return {f'{t}.{k}': str(v) for t in tasks for k, v in named.items() if v is not None}


def _folds(fold: str, n: int) -> list[int]:
    if fold == 'all': return list(range(n))
    try:
        k = int(fold)
    except ValueError:
        raise UserError(f'--fold {fold}: give a number 0-{n - 1} or all') from None
    if not 0 <= k < n: raise UserError(f'--fold {fold}: folds are 0-{n - 1} ([split] folds = {n})')
    return [k]


def _train_table(s: Settings):
    from .dataset import LoadReport
    from .train import training_table
    report = LoadReport()
    table = training_table(s, report=report)
    if not _in_launch(): console.print(_load_summary(report))     # a rank: the launching process printed it
    return table


def _results_table(results) -> Table:
    rows = [(r.task, r.run_dir.name, '-' if r.valid_f1 is None else f'{r.valid_f1:.4f}',
             '-' if r.valid_acc is None else f'{r.valid_acc:.4f}', r.epochs, f'{r.seconds:.0f}',
             f'{r.images_per_s:.1f}', f'{r.train_images_per_s:.1f}', str(r.export_dir or '-')) for r in results]
    return _table('training (images/s: whole fit incl. validation; train images/s: training phase, warm epochs)',
                  ('task', 'run', 'valid F1', 'valid acc', 'epochs', 'seconds', 'images/s', 'train images/s',
                   'exported to'), rows)


@command()
def train(task: LearnerArg, config: ConfigOpt = None, set: SetOpt = None, data: DataOpt = None,
          fold: Annotated[str, typer.Option(help='validation fold, or all for every fold', metavar='<k|all>',
                                            rich_help_panel=DATA)] = '0',
          full: Annotated[bool, typer.Option('--full', help='train on every photo for full_epochs', metavar=FLAG,
                                             rich_help_panel=DATA)] = False,
          arch: Annotated[Optional[str], typer.Option(help=f'timm architecture{_now("arch")}',
                                                      rich_help_panel=MODEL)] = None,
          weights: Annotated[Optional[Path],
                             typer.Option(help=f'local ImageNet weights (.safetensors){_now("weights")}',
                                                          metavar='<path>', rich_help_panel=MODEL)] = None,
          pretrained: Annotated[Optional[bool], typer.Option(
              '--pretrained/--no-pretrained', metavar=FLAG, rich_help_panel=MODEL,
              help=f'start from ImageNet weights (hub, or --weights) or from scratch{_now("pretrained")}')] = None,
          epochs: Annotated[Optional[int], typer.Option(help=f'epochs{_now("epochs")}; with --full: full_epochs'
                                                             f'{_now("full_epochs")}',
                                                             rich_help_panel=SCHEDULE)] = None,
          lr: Annotated[Optional[float],
                        typer.Option(help=f'peak learning rate (one-cycle; see mcls lr-find){_now("lr")}',
                                                      rich_help_panel=SCHEDULE)] = None,
          size: Annotated[Optional[int], typer.Option(help=f'input side in px the crops are resized to{_now("size")}',
                                                      rich_help_panel=MODEL)] = None,
          batch: Annotated[Optional[int], typer.Option(help=f'photos per training batch{_now("batch")}',
                                                       rich_help_panel=SCHEDULE)] = None,
          pipeline: Annotated[Optional[str], typer.Option(
              help='augmentation: a pipeline name (light_real, none, ...: docs/settings.md lists them) or an '
                   f'albumentations JSON/YAML file{_now("pipeline")}', rich_help_panel=MODEL)] = None,
          loss: Annotated[Optional[LossName], typer.Option(help=f'ce, or focal (age; the joint learner\'s age head)'
                                                                f'{_now("loss")}', rich_help_panel=MODEL)] = None,
          boundary: Annotated[Optional[int], typer.Option(
              help='age training-target boundary of the 60+ group (58 helped on data whose ages stop at 60)'
                   f'{_now("age.boundary")}', rich_help_panel=MODEL)] = None,
          resume: Annotated[bool, typer.Option('--resume', help="continue the task's latest run", metavar=FLAG,
                                               rich_help_panel=OUTPUT)] = False,
          run_dir: Annotated[Optional[Path], typer.Option('--run', help='run folder to --resume', metavar='<path>',
                                                          rich_help_panel=OUTPUT)] = None,
          export_dir: Annotated[Optional[Path], typer.Option(help='default: models/fold{k} or models/full under '
                                                                  f'paths.models{_now("paths.models")}',
                                                                  metavar='<path>', rich_help_panel=OUTPUT)] = None,
          workers: WorkersOpt = None,
          pseudo: Annotated[Optional[Path], typer.Option(
              help='a predict .probs.npz: add its confident eval photos to training (transductive)', metavar='<path>',
              rich_help_panel=DATA)] = None,
          min_prob: Annotated[float, typer.Option(min=0.0, max=1.0,
                                                  help='with --pseudo: every task\'s top probability at least',
                                                  rich_help_panel=DATA)] = 0.9,
          processes: ProcessesOpt = 1):
    "Train one task, the joint learner, or all, on a person-aware fold (or on all data with --full); export."
    from .modeldirs import check_outputs
    s = _settings(config, set, data)
    tasks = learners_for(task.value, s)
    if resume:
        training_keys = [kv for kv in set or [] if kv.partition('.')[0] in ('train', *LEARNERS)]
        given = {'--set ' + ' '.join(training_keys): training_keys, '--arch': arch, '--weights': weights,
                 '--pretrained': pretrained,
                 '--epochs': epochs, '--lr': lr, '--size': size, '--batch': batch, '--pipeline': pipeline,
                 '--loss': loss, '--boundary': boundary, '--pseudo': pseudo, '--full': full or None}
        if dropped := [k for k, v in given.items() if v]:
            raise UserError(f'--resume continues a run with the settings it was started with (its settings.ini): '
                            f'drop {", ".join(dropped)}, or start a new run without --resume')
        if processes > 1: _resumable(s, tasks, run_dir)      # found here, before the ranks start
    else:      # every settings, usage and path error before torch is imported
        named = dict(arch=arch, weights=weights, pretrained=pretrained, lr=lr, size=size, batch=batch,
                     pipeline=pipeline, loss=loss.value if loss else None,
                     **{'full_epochs' if full else 'epochs': epochs})
        overrides = _task_overrides(tasks, **named)
        if boundary is not None: overrides.update({f'{t}.boundary': str(boundary) for t in ('age', 'joint')})
        s = _settings(config, [*(set or []), *(f'{k}={v}' for k, v in overrides.items())], data)
        folds = [None] if full else _folds(fold, s.split.folds)    # before loading and cropping anything
        check_outputs(s, tasks, folds, export_dir)
    _join_ranks('train', processes)
    if resume:
        if processes > 1:
            _train_table(s)      # the crop cache, filled once before the ranks start
            return _launch(processes)
        console.print(_results_table(_resume(s, tasks, run_dir, export_dir, workers)))
        return
    from .learner import check_task_settings
    from .train import train_learners
    for t in tasks: check_task_settings(s.tasks[t], full)     # every learner (timm, pipelines), before any work
    import torch
    if hint := cpu_recipe_on_gpu(s, tasks, torch.cuda.is_available()): console.print(hint)
    table = _train_table(s)
    if processes > 1: return _launch(processes)
    if pseudo is not None:
        from .pseudo import add_pseudo
        table = add_pseudo(table, s, pseudo, min_prob)
        console.print(f'pseudo-labels: {int(table.pseudo.sum())} eval photos from {pseudo} (min prob {min_prob})')
    results = train_learners(table, s, tasks, folds, export_dir, workers,
                             on_result=lambda r: console.print(_results_table([r])))
    if len(results) > 1: console.print(_results_table(results))


def _join_ranks(command: str, processes: int):
    """--processes N: this process only checks, fills the crop cache and starts the ranks. As one of the ranks
    (started so, or by torchrun / accelerate launch): join the others; only rank 0 prints."""
    from . import distributed
    if processes > 1:
        if distributed.world_size() > 1:
            raise UserError(f'--processes {processes} inside a distributed launch (WORLD_SIZE '
                            f'{distributed.world_size()}): leave --processes to the launcher')
        if command not in sys.argv[1:]:     # called as a library: there is no command line for the ranks to run
            raise UserError(f'--processes needs the command line (`mcls {command} ... --processes {processes}`)')
        distributed.check_gpus(processes)
        return
    distributed.init()
    if not distributed.is_main():
        console.quiet = True
        logging.getLogger().setLevel(logging.ERROR)


def _launch(processes: int):
    from .distributed import launch, rank_args
    launch(rank_args(sys.argv[1:]), processes)


def _latest_runs(s: Settings, learners: list[str]) -> dict[str, Path | None]:
    "Each learner's latest run, None where it has none; a lone learner without one is latest_run's UserError."
    from .runs import latest_run
    found = {}
    for t in learners:
        try:
            found[t] = latest_run(s.paths.runs, t)
        except UserError:
            if len(learners) == 1: raise
            found[t] = None
    return found


def _resumable(s: Settings, learners: list[str], run_dir: Path | None):
    "What `_resume` would find to resume, or the UserError it would raise: checked before ranks start."
    from .runs import RUN_FILE
    if run_dir is not None:
        if not (Path(run_dir) / RUN_FILE).exists():
            raise UserError(f'{run_dir}: no {RUN_FILE}: not a run folder to --resume')
    elif not any(_latest_runs(s, learners).values()):
        raise UserError(f'no run of {", ".join(learners)} under {s.paths.runs}: nothing to resume')


def _resume(s: Settings, learners: list[str], run_dir: Path | None, export_dir, workers) -> list:
    "--run R resumes that run alone; otherwise each learner's latest run, unless it finished."
    from .runs import run_status
    from .train import resume_task
    if run_dir is not None: return [resume_task(run_dir, export_dir, workers)]
    results = []
    for t, r in _latest_runs(s, learners).items():
        if r is None: console.print(f'{t}: no run to resume; train it with `mcls train {t}`'); continue
        if run_status(r) == 'done': console.print(f'{r}: finished already; nothing to resume'); continue
        results.append(resume_task(r, export_dir, workers))
    return results


@command('lr-find')
def lr_find(task: Annotated[Learner, typer.Argument(help='the learner')], config: ConfigOpt = None,
            set: SetOpt = None, data: DataOpt = None, fold: FoldOpt = 0,
            plot: Annotated[Optional[Path], typer.Option(help='PNG (default paths.reports/lr_find_<task>.png)',
                                                         metavar='<path>', rich_help_panel=OUTPUT)] = None,
            num_it: Annotated[int, typer.Option(min=LR_FIND_MIN_IT, help='learning rates tried, log-spaced')] = 100,
            workers: WorkersOpt = None, out: OldOut = None):
    "fastai's learning-rate finder for one learner (every layer trainable): saves the plot and prints suggestions."
    out = _renamed(plot, out)
    t, s = task.value, _settings(config, set, data)
    k = _folds(str(fold), s.split.folds)[0]
    from .atomic import output_file
    out = output_file(out or Path(s.paths.reports) / f'lr_find_{t}.png', 'the plot')
    from .train import lr_find_task
    sugg = lr_find_task(_train_table(s), s, t, k, out, workers, num_it)
    console.print(_table(f'lr_find {t} (current lr {s.tasks[t].lr:g})', ('suggestion', 'lr'),
                         [(k, f'{v:.2e}') for k, v in sugg.items()]))
    console.print(f'wrote {out}')


@command()
def runs(config: ConfigOpt = None, set: SetOpt = None,
         task: Annotated[Optional[Learner], typer.Option(help='only runs of this learner')] = None,
         last: Annotated[int, typer.Option(min=1, help='rows shown')] = 30,
         diff: Annotated[Optional[tuple[Path, Path]], typer.Option(
             help='two run folders (or run names under paths.runs): the settings that differ between them',
             metavar='<run A> <run B>')] = None):
    "Past training runs with their validation scores, best first; --diff A B: what changed between two runs."
    from .runs import diff_runs, list_runs
    s = _settings(config, set)
    if diff:
        a, b = (d if d.is_dir() else Path(s.paths.runs) / d for d in diff)
        rows = diff_runs(a, b)
        console.print(_table(f'settings that differ: A = {a.name}, B = {b.name}', ('setting', 'A', 'B'), rows)
                      if rows else f'{a.name} and {b.name} ran with the same settings')
        return
    df = list_runs(s.paths.runs)
    if task: df = df[df.task == task.value]
    console.print(_table(f'runs in {s.paths.runs}', list(df.columns),
                         [['-' if pd_isna(v) else v for v in r] for r in df.head(last).itertuples(index=False)]))


def pd_isna(v) -> bool:
    import pandas as pd
    return v is None or (not isinstance(v, str) and pd.isna(v))


def _model_dirs(s: Settings, models) -> list[Path]:
    "--models, else models/full when it holds learners, else every models/fold*; each checked before any work."
    from .modeldirs import check_model_dir, export_dir_for, fold_dirs, learners_in
    if models:
        for d in models: check_model_dir(d)
        return list(models)
    full = export_dir_for(s, None)
    if learners_in(full): return [full]
    folds = fold_dirs(s.paths.models)
    if not folds: raise UserError(f'no models under {s.paths.models}: run `mcls train all` first, or pass --models')
    return folds


@command()
def predict(config: ConfigOpt = None, set: SetOpt = None, data: DataOpt = None, models: ModelsOpt = None,
            tta: Annotated[Optional[bool], typer.Option('--tta/--no-tta', help=f'fastai TTA{_now("predict.tta")}',
                                                        metavar=FLAG, rich_help_panel=MODEL)] = None,
            out: Annotated[Optional[Path], typer.Option(help=f'submission CSV{_now("predict.out")}', metavar='<path>',
                                                        rich_help_panel=OUTPUT)] = None,
            tune: Annotated[bool, typer.Option('--tune/--no-tune', help='apply tuned class offsets', metavar=FLAG,
                                               rich_help_panel=MODEL)] = True,
            pickle: PickleOpt = False,
            persons: Annotated[Optional[PersonsMode], typer.Option(
                help=f'auto: find each person\'s photos and decide per person{_now("predict.persons")}',
                rich_help_panel=MODEL)] = None,
            engine: Annotated[Optional[Engine], typer.Option(
                help=f'torch, or onnx: onnxruntime on each folder\'s <task>.onnx (`mcls export-onnx`)'
                     f'{_now("predict.engine")}', rich_help_panel=MODEL)] = None,
            processes: PredictProcessesOpt = 1):
    """Predict the eval photos and write the submission (+ .probs.npz). Each model folder holds a joint learner or
    three task learners; several folders are averaged. Default: models/full when it holds learners, else every
    models/fold*."""
    from .atomic import output_file
    s = _settings(config, set, data, **{'predict.persons': persons.value if persons else None,
                                        'predict.engine': engine.value if engine else None})
    out = output_file(out or s.predict.out, 'the submission')     # before any work, and before torch is imported
    dirs = _model_dirs(s, models)
    from .predict import eval_table, predict_eval
    from .threads import job, use_threads
    _join_ranks('predict', processes)
    if processes > 1:
        eval_table(s, dirs)      # checks, and fills the crop cache once before the ranks start
        return _launch(processes)
    engine_note = s.predict.engine
    if s.predict.engine == 'onnx':      # which provider runs, said, and a GPU without one refused before any work
        from .onnx_engine import providers
        engine_note += f' on {providers()[0]}'
    use_tta = s.predict.tta if tta is None else tta
    t0 = time.perf_counter()
    with job():
        console.print(use_threads(s.threads))
        sub = predict_eval(s, dirs, out, use_tta, tune, pickle)
    if sub is None: return     # not rank 0
    console.print(f'wrote {out} ({len(sub)} rows, {_tta_note(s.predict) if use_tta else "no TTA"}, '
                  f'engine {engine_note}, '
                  f'persons {s.predict.persons}, '
                  f'models {", ".join(map(str, dirs))}, {time.perf_counter() - t0:.0f} s) and {out}.probs.npz')


@command('export-onnx')
def export_onnx(models: Annotated[Path, typer.Argument(help='a model folder `mcls train` exported')],
                config: ConfigOpt = None, set: SetOpt = None):
    """Write each learner of a model folder as <task>.onnx beside it (fp32, any batch size; input size and
    normalisation in the graph's metadata), for `mcls predict --engine onnx` or onnxruntime anywhere."""
    from .onnx_engine import export_onnx as export
    from .threads import use_threads
    s = _settings(config, set)
    use_threads(s.threads)
    for p in export(models): console.print(f'wrote {p}')


def print_scores(scores, title='scores'):
    console.print(_table(title, ('metric', 'value'), [('macro F1 (18 classes)', scores.f1),
                                                      ('accuracy', scores.accuracy),
                                                      *[(f'{t} macro F1', v) for t, v in scores.task_f1.items()]]))


@command()
def evaluate(submission: Annotated[Path, typer.Argument(help='ImageID,ans CSV to score')],
             answers: Annotated[Path, typer.Argument(help='ImageID,ans CSV of the true classes')],
             plot: Annotated[Optional[Path], typer.Option(
                 help='confusion-matrix PNG (default paths.reports/confusion_<submission>.png)', metavar='<path>',
                 rich_help_panel=OUTPUT)] = None,
             persons_map: Annotated[Optional[Path], typer.Option(
                 help='file,id CSV naming each eval photo\'s person (build_meta.csv): scores the person '
                      'groups')] = None,
             config: ConfigOpt = None, set: SetOpt = None, out: OldOut = None):
    "Score a submission against answers (both ImageID,ans): F1, accuracy, per task, per class, confusion matrix."
    from .atomic import output_file
    from .evaluate import evaluate_files, grouping_quality, plot_confusion
    s = _settings(config, set)
    out = output_file(_renamed(plot, out) or Path(s.paths.reports) / f'confusion_{Path(submission).stem}.png',
                      'the plot')
    sc = evaluate_files(submission, answers)
    console.print(_table('per class', ('class', 'name', 'precision', 'recall', 'f1', 'support'),
                         sc.per_class.itertuples(index=False)))
    print_scores(sc)
    if persons_map is not None:
        q = grouping_quality(submission, persons_map)
        console.print(_table('person groups', ('measure', 'value'), list(q.items())))
    dest = plot_confusion(sc.confusion, out)
    console.print(f'wrote {dest}')


@command()
def compare(a: Annotated[str, typer.Argument(help='side A: submission CSV(s) or run/model folder(s), comma-separated',
                                             metavar='<A>')],
            b: Annotated[str, typer.Argument(help='side B, as A (several: runs of one recipe with other seeds)',
                                             metavar='<B>')],
            answers: Annotated[Optional[Path],
                               typer.Option(help='ImageID,ans CSV that submissions are scored against')] = None,
            persons_map: Annotated[Optional[Path], typer.Option(
                help='file,id CSV naming each eval photo\'s person (build_meta.csv) so persons are resampled; '
                     'validation folders use their train.csv person folders')] = None,
            draws: Annotated[int, typer.Option(min=1, help='bootstrap draws (at most 100,000)')] = 2000,
            seed: Annotated[int, typer.Option(min=0, help='seed of the draws')] = 0,
            json_out: Annotated[Optional[Path], typer.Option('--json',
                                                             help='write the figures as JSON, keyed by metric')] = None,
            plot: Annotated[Optional[Path],
                            typer.Option(help='PNG of the differences (default paths.reports/compare.png)')] = None,
            config: ConfigOpt = None, set: SetOpt = None):
    "Is B better than A? Paired bootstrap over persons: macro F1 (18 classes, each task), log-loss, 95% intervals."
    import json
    from .atomic import output_file, write_text_atomic
    s = _settings(config, set)
    plot = output_file(plot or Path(s.paths.reports) / 'compare.png', 'the plot')
    if json_out is not None: output_file(json_out, 'the JSON')
    from .compare import check_draws, compare as run_compare, plot_differences, read_side
    check_draws(draws)
    sides = [read_side([Path(x) for x in side.split(',') if x], answers) for side in (a, b)]
    r = run_compare(*sides, persons_map=persons_map, draws=draws, seed=seed)
    rows = [(m, v['a'], v['b'], f'{v["diff"]:+.4f}', f'[{v["low"]:+.4f}, {v["high"]:+.4f}]', f'{v["p_b_better"]:.3f}')
            for m, v in r['metrics'].items()]
    console.print(_table(f'B - A over {r["n_units"]} {r["units"]} ({r["n_photos"]} photos, {r["draws"]} draws; '
                         f'A: {len(r["a_runs"])} run(s), B: {len(r["b_runs"])})',
                         ('metric', 'A', 'B', 'B-A', '95% interval', 'P(B better)'), rows))
    console.print(f'wrote {plot_differences(r, plot)}')
    if json_out is not None:
        meta = {k: v for k, v in r.items() if k not in ('metrics', 'differences')}
        write_text_atomic(json_out, json.dumps({**r['metrics'], 'meta': meta}, indent=1))
        console.print(f'wrote {json_out}')


@command()
def persons(config: ConfigOpt = None, set: SetOpt = None, data: DataOpt = None,
            out: Annotated[Optional[Path], typer.Option(help='CSV (default: paths.reports/persons.csv)')] = None,
            top: Annotated[int, typer.Option(min=1, help='groups of each kind on the contact sheet')] = 8):
    """Group the eval photos into persons by face identity (SFace): persons.csv + a contact sheet of the largest and
    least certain groups."""
    from .atomic import output_file, write_csv_atomic
    from .crop import attach_crops
    from .dataset import load_eval
    from .identity import check_weights
    from .persons import group_eval, group_sheet, persons_table
    s = _settings(config, set, data)
    out = output_file(out or Path(s.paths.reports) / 'persons.csv', 'the persons table')
    check_weights(s.predict.identity_weights)
    df, _ = attach_crops(load_eval(s.paths.data).assign(split='eval'), s.crop, s.paths.cache)
    groups, emb, info = group_eval(s, df.crop.tolist())
    table = persons_table(df.image_id, groups, emb)
    write_csv_atomic(table, out)
    sheet = group_sheet(table, df.crop.tolist(), out.with_suffix('.png'), top)
    sizes = table.groupby('group')['size'].first()
    console.print(_table('person groups (no labels read)', ('measure', 'value'), [
        ('photos', len(table)), ('groups', len(sizes)), ('groups of 7', int((sizes == 7).sum())),
        ('photos alone', int((sizes == 1).sum())), ('largest group', int(sizes.max())),
        ('threshold (cosine distance)', info['threshold']),
        ('pairwise precision / recall on jittered fold 0', f'{info["precision"]:.3f} / {info["recall"]:.3f}')]))
    console.print(f'wrote {out} and {sheet}')


@command('tune')
def tune_cmd(models: Annotated[Optional[list[Path]], typer.Option(
                 '--models', '-m', metavar='<folder>',
                 help='fold model folders (default: every models/fold*); their validation photos '
                                        'are pooled, each photo once')] = None,
             config: ConfigOpt = None, set: SetOpt = None):
    "Fit per-task class offsets for macro F1 on the validation probabilities saved with fold models."
    from .modeldirs import fold_dirs
    from .tune import fit_offsets, load_oof, write_offsets
    s = _settings(config, set)
    dirs = list(models) if models else fold_dirs(s.paths.models)
    if not dirs: raise UserError(f'no fold models under {s.paths.models}: train with --fold first')
    offsets, report, rows = {}, {}, []
    for t in TASKS:
        probs, y = load_oof(dirs, t)
        off, before, after = fit_offsets(probs, y)
        offsets[t], report[t] = off.round(3).tolist(), {'f1_before': before, 'f1_after': after, 'n': len(y)}
        rows.append((t, len(y), before, after, ' '.join(f'{v:+.2f}' for v in off)))
    for d in dirs: write_offsets(d, offsets, report)
    console.print(_table('decision tuning on validation folds (true groups)',
                         ('task', 'photos', 'F1 before', 'F1 after', 'offsets'), rows))
    console.print(f'wrote tuning.json to {", ".join(map(str, dirs))}; `mcls predict` applies it (--no-tune to skip)')


@command()
def interpret(task: TaskArg, config: ConfigOpt = None, set: SetOpt = None, data: DataOpt = None, fold: FoldOpt = 0,
              models: Annotated[Optional[Path], typer.Option('--models', '-m', help='one model folder (default '
                                                             'paths.models/fold{k})', metavar='<folder>')] = None,
              k: Annotated[int, typer.Option(min=1, help='top losses shown')] = 9,
              workers: WorkersOpt = None, pickle: PickleOpt = False):
    "Confusion matrix and top losses of a task's learner on the fold it did not train on."
    from .modeldirs import check_model_dir, export_dir_for
    t = task.value
    s = _settings(config, set, data)
    _folds(str(fold), s.split.folds)
    model_dir = models or export_dir_for(s, fold)
    check_model_dir(model_dir)            # before torch is imported and every training photo cropped
    from .atomic import output_dir
    output_dir(s.paths.reports, 'the reports folder (paths.reports)')
    from .interpret import interpret_task
    for p in interpret_task(_train_table(s), t, model_dir, fold, Path(s.paths.reports), k, workers, pickle):
        console.print(f'wrote {p}')


@command()
def suspects(task: Annotated[TaskOrAll, typer.Argument(help='the task, or all')] = TaskOrAll.all,
             config: ConfigOpt = None, set: SetOpt = None, data: DataOpt = None,
             models: Annotated[Optional[list[Path]], typer.Option(
                 '--models', '-m', metavar='<folder>',
                 help='fold folders whose validation files cover every photo (default: train '
                                        '--folds new ones into models/oof)')] = None,
             folds: Annotated[int, typer.Option(min=2, help='folds to train when no --models')] = 3,
             top: Annotated[int, typer.Option(min=1, help='suspects on the contact sheet')] = 24,
             accept: Annotated[Optional[int], typer.Option(
                 min=1, help='write the top N of each task into paths.corrections')] = None):
    "Likely label errors from out-of-fold predictions (cleanlab): CSV + contact sheet per task; --accept N fixes them."
    from .atomic import output_dir, output_file, write_csv_atomic
    tasks = list(TASKS) if task.value == 'all' else [task.value]
    s = _settings(config, set, data)
    if accept is not None and s.paths.corrections is None:
        raise UserError('--accept needs a corrections file: add `corrections = data/corrections.csv` under [paths] '
                        'in ./settings.ini, so that every later command applies the fixes')
    output_dir(s.paths.reports, 'the reports folder (paths.reports)')       # before training any fold
    if accept is not None: output_file(s.paths.corrections, 'the corrections file (paths.corrections)')
    from .suspects import accept_suspects, contact_sheet, oof_models, oof_probs, suspect_table
    corrections = s.paths.corrections
    if corrections is not None and not corrections.exists():   # the first --accept creates it
        s = dataclasses.replace(s, paths=dataclasses.replace(s.paths, corrections=None))
    dirs = list(models) if models else oof_models(s, folds)
    table = _train_table(s)
    rows = []
    for t in tasks:
        sus = suspect_table(table, oof_probs(dirs, t), t)
        csv = Path(s.paths.reports) / f'suspects_{t}.csv'
        write_csv_atomic(sus, csv)
        sheet = contact_sheet(sus, Path(s.paths.reports) / f'suspects_{t}.png', top)
        n = accept_suspects(sus, corrections, accept) if accept is not None else 0
        rows.append((t, len(sus), int((sus.given != sus.suggested).sum()), str(csv), str(sheet), n))
        console.print(_table(f'top suspects: {t}', ('key', 'given', 'suggested', 'value', 'score'),
                             sus.head(10)[['key', 'given', 'suggested', 'value', 'score']].itertuples(index=False)))
    console.print(_table('suspects', ('task', 'items', 'disagreeing', 'csv', 'contact sheet', 'accepted'), rows))
    if accept is not None:
        src = s.sources.get('paths.corrections', '')
        console.print(f'wrote {corrections}; ' + (
            f'paths.corrections came from the {src} for this command alone: set it in ./settings.ini so that '
            f'`mcls train` applies the fixes' if src == 'command line' else
            f'`mcls train` applies it (paths.corrections from {src})'))


@command('predict-image')
def predict_image(photos: Annotated[list[Path], typer.Argument(help='.jpg, .jpeg or .png photos',
                                                               metavar='<photo>...')],
                  config: ConfigOpt = None, set: SetOpt = None, models: ModelsOpt = None,
                  tta: Annotated[bool, typer.Option('--tta/--no-tta', help='with \\[predict] TTA',
                                                    metavar=FLAG)] = False,
                  pickle: PickleOpt = False):
    "Mask, gender and age group of single photos, with probabilities (face crop included)."
    import pandas as pd
    from .crop import crop_images
    from .labels import AGE_NAMES, GENDERS, LABEL_TASKS, MASK_NAMES, decode
    from .predict import predict_frame
    s = _settings(config, set)
    for p in photos:
        if not p.is_file(): raise UserError(f'{p}: no such photo; give the path of a .jpg, .jpeg or .png file')
    crops, _ = crop_images([str(p) for p in photos], s.crop, s.paths.cache, strict=True, progress=False,
                           why='or leave it out of the command')
    df = pd.DataFrame({'crop': [str(crops[str(p)]) for p in photos]})
    labels, probs = predict_frame(df, _model_dirs(s, models), s.predict, tta, pickle=pickle)
    rows = []
    for i, p in enumerate(photos):
        m, g, a = decode(int(labels[i]))
        rows.append((str(p), f'{MASK_NAMES[m]} {probs["mask"][i][m]:.2f}', f'{GENDERS[g]} {probs["gender"][i][g]:.2f}',
                     f'{AGE_NAMES[a]} {probs["age"][i][a]:.2f}', int(labels[i])))
    console.print(_table('prediction', ('photo', *LABEL_TASKS, 'class'), rows))


@command()
def demo(out_dir: Annotated[Path, typer.Option(help='working folder (replaced)', metavar='<path>')] = Path('data/demo'),
         train_persons: Annotated[int, typer.Option(min=1, help='synthetic training persons')] = 100,
         epochs: Annotated[int, typer.Option(
             min=1, help='per task; one epoch of a tiny model from scratch is chance level')] = 8,
         out: OldOut = None, persons: OldPersons = None):
    """No downloads, no data: synthetic faces -> crop -> train what `train all` trains (tiny model) -> predict --tta
    -> evaluate."""
    from .demo import run_demo
    scores = run_demo(_renamed(out_dir, out), persons=_renamed(train_persons, persons), epochs=epochs, console=console)
    print_scores(scores, 'demo scores (drawn faces)')     # the title fits the table: 80 columns


def run():
    """Entry point: errors the user can fix become one clear line on stderr and exit code 2; anything else is a
    bug and keeps its traceback. A rank of `--processes N` leaves its error to the launcher, which reports it."""
    import warnings   # a dependency's deprecation notice on every command would make each error three lines
    warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
    try:     # typer vendors click: its usage errors are that click's exceptions
        from typer._click import ClickException
    except ImportError:
        from click import ClickException
    try:
        code = app(prog_name='mcls', standalone_mode=False)     # usage errors come here too, not as a framed box
    except ClickException as e:
        if type(e).__name__ != 'NoArgsIsHelpError':      # that one has printed the help already
            ctx = getattr(e, 'ctx', None)
            _one_line(f'{e.format_message()} (see `{ctx.command_path if ctx else "mcls"} --help`)')
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _one_line('interrupted')
        sys.exit(130)
    except FixableError as e:
        _one_line(str(e))
        sys.exit(2)
    except Exception as e:
        if getattr(e, 'signum', None) is not None:      # distributed.Stopped: the launcher got SIGTERM or SIGHUP
            _one_line(f'interrupted ({e}): every rank was stopped')
            sys.exit(128 + e.signum)
        if not _in_launch(): raise
        import traceback
        from .distributed import write_error
        write_error(f'{type(e).__name__}: {e}', traceback.format_exc())
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _in_launch() -> bool:
    import os
    return RANKS_DIR in os.environ


def _one_line(message: str):
    if _in_launch():
        from .distributed import write_error
        write_error(message)
        return
    Console(stderr=True, soft_wrap=True).print(f'[bold red]error:[/] {escape(" ".join(message.split()))}')
