"""The `mcls` command line: a thin typer layer over the library functions."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from .settings import TASKS, Settings, SettingsError, load_settings, parse_overrides

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help='Face photos -> mask state x gender x age group, with fastai. Settings: settings.ini.')
console = Console()

ConfigOpt = Annotated[Optional[Path], typer.Option('--config', '-c', help='settings file layered over ./settings.ini')]
SetOpt = Annotated[Optional[list[str]], typer.Option('--set', '-s', help='override any setting: section.key=value')]
DataOpt = Annotated[Optional[Path], typer.Option('--data', '-d', help='competition layout root (paths.data)')]


class UserError(Exception):
    "Errors a user can fix: printed as one line, exit code 2."


def _settings(config, sets, data=None, **named) -> Settings:
    "Resolve settings: files, then --set, then the named flags (None means 'not given')."
    overrides = parse_overrides(sets)
    if data is not None: overrides['paths.data'] = str(data)
    overrides.update({k: str(v) for k, v in named.items() if v is not None})
    return load_settings(config, overrides)


def _table(title: str, columns, rows) -> Table:
    t = Table(title=title, title_justify='left')
    for c in columns: t.add_column(c, justify='right' if c[:1].islower() and c not in ('setting', 'source', 'value') else 'left')
    for r in rows: t.add_row(*[f'{v:.4f}' if isinstance(v, float) else str(v) for v in r])
    return t


@app.callback()
def main(verbose: Annotated[bool, typer.Option('--verbose', '-v', help='log every skipped file')] = False):
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, format='%(message)s',
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False)])


@app.command()
def config(config: ConfigOpt = None, set: SetOpt = None):
    "Print the resolved settings and where each value came from."
    s = _settings(config, set)
    rows = []
    for sec, values in s.raw.items():
        for key, value in values.items():
            rows.append((f'{sec}.{key}', value, s.sources.get(f'{sec}.{key}', '?')))
    console.print(_table('settings', ('setting', 'value', 'source'), rows))
    console.print('[dim]Task sections inherit [train]; override with --set mask.lr=1e-4 or a task flag.[/]')


@app.command()
def synth(out: Annotated[Path, typer.Argument(help='folder to write (replaced)')],
          persons: int = 40, eval_persons: int = 10, seed: int = 0,
          awkward: Annotated[bool, typer.Option(help='add hidden, truncated, grey, RGBA, CMYK, EXIF cases')] = False):
    "Write a small synthetic data set in the competition layout (drawn faces; no downloads)."
    from .synth import make_dataset
    info = make_dataset(out, persons, eval_persons, seed=seed, awkward=awkward)
    console.print(f'{info.root}: {info.persons} persons, {info.train_images} training and {info.eval_images} eval photos')


def _load(s: Settings, with_eval=True):
    from .dataset import LoadReport, load_images, load_train
    report = LoadReport()
    df = (load_images if with_eval else load_train)(s.paths.data, s.paths.corrections, report=report)
    return df, report


def _load_summary(report) -> Table:
    rows = [('persons', report.persons), ('training photos', report.images), ('eval photos', report.eval_images),
            ('label corrections applied', report.corrections), ('persons without 7 photos', report.incomplete_persons)]
    rows += [(f'skipped: {k}', v) for k, v in sorted(report.skipped.items())]
    return _table('data', ('item', 'count'), rows)


@app.command()
def eda(config: ConfigOpt = None, set: SetOpt = None, data: DataOpt = None,
        out: Annotated[Optional[Path], typer.Option(help='plot folder (default: paths.reports/eda)')] = None):
    "Distributions of gender, age, mask and the 18 classes: rich tables and PNG plots."
    from .eda import distributions, plot_distributions
    s = _settings(config, set, data)
    df, report = _load(s)
    console.print(_load_summary(report))
    boundary = s.tasks['age'].boundary
    for title, t in distributions(df, boundary).items():
        console.print(_table(title, ('value', 'count', 'share'), t.itertuples(index=False)))
    for p in plot_distributions(df, out or s.paths.reports / 'eda', boundary): console.print(f'wrote {p}')


def crop_summary(stats) -> Table:
    rows = [('photos', stats.total), ('already cached', stats.cached), ('faces found', stats.faces),
            ('centre-crop fallbacks', stats.fallbacks),
            ('fallback share', f'{stats.fallbacks / max(stats.cropped, 1):.1%}'),
            ('seconds', f'{stats.seconds:.1f}'), ('photos/s', f'{stats.images_per_s:.1f}')]
    rows += [(f'skipped: {k}', v) for k, v in sorted(stats.skipped.items())]
    return _table('crop', ('item', 'count'), rows)


@app.command()
def crop(config: ConfigOpt = None, set: SetOpt = None, data: DataOpt = None,
         split: Annotated[str, typer.Option(help='train, eval or all')] = 'all'):
    "Crop faces (MTCNN, centre-crop fallback) of train and eval photos into the cache; reruns do nothing."
    from .crop import attach_crops
    if split not in ('train', 'eval', 'all'): raise UserError(f'--split {split}: use train, eval or all')
    s = _settings(config, set, data)
    df, report = _load(s, with_eval=split != 'train')
    if split != 'all': df = df[df.split == split]
    console.print(_load_summary(report))
    t0 = time.perf_counter()
    _, stats = attach_crops(df, s.crop, s.paths.cache)
    console.print(crop_summary(stats))
    console.print(f'cache: {s.paths.cache}  ({time.perf_counter() - t0:.1f} s in all)')


def run():
    "Entry point: known errors become one clear line and exit code 2."
    from .dataset import DataError
    try:
        app()
    except (UserError, SettingsError, DataError, FileNotFoundError, OSError) as e:
        console.print(f'[bold red]error:[/] {e}')
        sys.exit(2)
