import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mcls.errors import DataError, WriteError
from mcls.settings import SettingsError, load_settings
from tests.conftest import tiny_settings
from tests.helpers import READ_ONLY, _cli, _info, needs_read_only, one_line_error

pytestmark = pytest.mark.cli     # most tests run the command line in a subprocess

ROOT = Path(__file__).parents[1]


def cli(*args, cwd=ROOT, shim=True):
    "Run the CLI in a fresh process: the root `cli.py` shim or the installed `mcls` entry point."
    cmd = [sys.executable, str(ROOT / 'cli.py')] if shim else [str(Path(sys.executable).with_name('mcls'))]
    env = {**os.environ, 'COLUMNS': '200'}
    return subprocess.run([*cmd, *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def test_shim_and_entry_point_behave_the_same(tmp_path):
    a, b = cli('config', '--set', 'mask.lr=5e-4', cwd=tmp_path), cli('config', '--set', 'mask.lr=5e-4', cwd=tmp_path,
                                                                      shim=False)
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout
    assert 'mask.lr' in a.stdout and '5e-4' in a.stdout and 'command line' in a.stdout


def test_config_shows_sources(tmp_path):
    (tmp_path / 'settings.ini').write_text('[age]\nboundary = 58\n')
    out = cli('config', cwd=tmp_path).stdout
    line = next(l for l in out.splitlines() if 'age.boundary' in l)
    assert '58' in line and 'settings.ini' in line


@pytest.mark.parametrize('args,match', [
    (['train', 'mask', '--lr', '0'], "lr = '0.0' .* must be > 0"),
    (['train', 'mask', '--arch', 'nonet_b9'], 'not a timm model'),
    (['train', 'mask', '--pipeline', 'sparkles'], 'unknown pipeline'),
    (['train', 'mask', '--weights', 'missing.safetensors'], 'file not found'),
    (['train', 'nose'], "'nose' is not one of 'mask', 'gender', 'age', 'joint', 'all'"),
    (['train', 'mask', '--set', 'mask.lr=quick'], r'\[mask\] lr'),
])
def test_bad_settings_fail_before_any_work(tmp_path, args, match):
    r = cli(*args, '--no-pretrained', '--data', tmp_path / 'nowhere', cwd=tmp_path)
    assert r.returncode == 2
    assert re.search(match, ' '.join(r.stderr.split())), r.stderr
    assert not (tmp_path / 'runs').exists()


def test_crop_eda_and_missing_data_message(tmp_path):
    r = cli('eda', '--data', tmp_path / 'nowhere', cwd=tmp_path)
    assert r.returncode == 2 and 'train.csv: not found' in r.stderr and 'error' not in r.stdout
    assert cli('synth', tmp_path / 'd', '--train-persons', '6', '--eval-persons', '2', cwd=tmp_path).returncode == 0
    r = cli('eda', '--data', tmp_path / 'd', cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / 'reports' / 'eda' / 'age_hist.png').exists()
    r = cli('crop', '--data', tmp_path / 'd', '--set', 'crop.size=64', cwd=tmp_path)
    assert r.returncode == 0 and 'centre-crop fallbacks' in r.stdout
    r = cli('crop', '--data', tmp_path / 'd', '--set', 'crop.size=64', cwd=tmp_path)
    assert re.search(r'already cached\s*│\s*56 ', r.stdout) and re.search(r'faces found\s*│\s*0 ', r.stdout)


def test_demo_runs_end_to_end(tmp_path):
    r = cli('demo', '--out-dir', tmp_path / 'demo', '--train-persons', '24', '--epochs', '2', cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    sub = pd.read_csv(tmp_path / 'demo' / 'submission.csv')
    info = pd.read_csv(tmp_path / 'demo' / 'data' / 'eval' / 'info.csv')
    assert sub.ImageID.tolist() == info.ImageID.tolist() and sub.ans.between(0, 17).all()
    assert 'macro F1 (18 classes)' in r.stdout
    title = next(i for i, l in enumerate(r.stdout.splitlines()) if l.startswith('demo scores'))
    table = r.stdout.splitlines()[title:title + 10]
    assert table[0].strip() == 'demo scores (drawn faces)' and max(map(len, (l.rstrip() for l in table))) <= 80
    from mcls.settings import learners_for
    learners = learners_for('all', load_settings(cwd=tmp_path))      # what [train] mode says `train all` trains
    assert all((tmp_path / 'demo' / 'models' / 'fold0' / f'{t}.pkl').exists() for t in learners)


def test_config_names_the_train_section(tmp_path):
    assert '[train]' in cli('config', cwd=tmp_path).stdout


def test_a_fold_that_does_not_exist_is_refused_before_loading(tmp_path):
    r = cli('train', 'mask', '--fold', '9', '--no-pretrained', '--data', tmp_path / 'nowhere', cwd=tmp_path)
    assert r.returncode == 2 and '--fold 9' in r.stderr and 'train.csv' not in r.stderr


def test_crop_one_split(tmp_path):
    from mcls.synth import make_dataset
    make_dataset(tmp_path / 'data', persons=3, eval_persons=1, seed=2)
    for split, n in (('train', 21), ('eval', 7)):
        r = cli('crop', '--split', split, '--data', tmp_path / 'data', '--set', f'paths.cache={tmp_path / split}',
                cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert re.search(rf'photos\s*│\s*{n} ', r.stdout)


def test_every_cli_option_and_argument_has_help():
    import typer.main

    from mcls.cli import app
    cmd = typer.main.get_command(app)
    missing = [(name, p.name) for name, c in cmd.commands.items() for p in c.params if not getattr(p, 'help', None)]
    assert missing == [] and all(getattr(p, 'help', None) for p in cmd.params)


def test_help_shows_values_in_force_panels_and_one_metavar_style(tmp_path):
    "run where a settings.ini sets a value: train's help names it and the file; no flag shows a type"
    import typer.main
    (tmp_path / 'settings.ini').write_text('[joint]\nepochs = 9\n')
    r = cli('train', '--help', cwd=tmp_path)
    text = ' '.join(r.stdout.split())
    assert re.search(r'epochs \(now mask \d+, gender \d+, age \d+, joint 9 from (packaged defaults, )?settings.ini',
                     text), text
    for panel in ('Data', 'Model', 'Schedule', 'Output', 'Distributed'): assert f'─ {panel} ─' in r.stdout
    from mcls.cli import app
    cmd = typer.main.get_command(app)
    for name, c in cmd.commands.items():
        for p in c.params:
            if p.name == 'help': continue
            if getattr(p, 'is_flag', False): assert p.metavar == '', (name, p.name)       # flags: no <bool>
            elif getattr(p, 'multiple', False) or p.nargs == -1:      # lists: a named kind, not <list[Path]>
                assert p.metavar and not p.metavar.startswith('<list'), (name, p.name)


@pytest.mark.parametrize('args,words', [
    (['train', 'nose'], ["'nose' is not one of", 'mcls train --help']),
    (['train', '--nope'], ['No such option: --nope']),
    (['predict', '--models', 'nowhere'], ['nowhere: no such model folder']),
    (['interpret', 'age', '--models', 'nowhere'], ['nowhere: no such model folder']),
])
def test_usage_errors_and_missing_model_folders_are_one_line_naming_the_cause(tmp_path, args, words):
    from mcls.synth import make_dataset
    make_dataset(tmp_path / 'data', persons=6, eval_persons=1, seed=1)
    r = cli(*args, '--data', tmp_path / 'data', '--set', f'paths.cache={tmp_path / "crops"}', cwd=tmp_path) \
        if args[0] in ('predict', 'interpret') else cli(*args, cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and all(w in lines[0] for w in words), r.stderr
    assert not (tmp_path / 'crops').exists()        # refused before cropping anything


NO_TORCH = """
import sys
from mcls.cli import run
sys.argv = ['mcls', *sys.argv[1:]]
try:
    run()
except SystemExit as e:
    print('exit', e.code, 'torch imported' if 'torch' in sys.modules else 'torch not imported')
"""


@pytest.mark.parametrize('args, words', [
    (['train', 'joint', '--set', 'joint.lr=-1'], 'must be > 0'),
    (['predict', '--models', 'nowhere'], 'no such model folder'),
    (['train', 'mask', '--fold', '7'], 'folds are 0-'),
    (['train', 'mask', '--set', 'joint.epoch=2'], 'did you mean joint.epochs'),
    (['interpret', 'age', '--models', 'nowhere'], 'no such model folder'),
    (['lr-find', 'age', '--fold', '9'], 'folds are 0-'),
    (['train', 'mask', '--export-dir', 'settings.ini'], 'a file is in the way'),
])
def test_errors_found_without_torch_leave_it_unimported(tmp_path, args, words):
    "settings, usage and path errors come before the learners' modules (torch, fastai, timm) are imported"
    (tmp_path / 'settings.ini').write_text('')
    r = subprocess.run([sys.executable, '-c', NO_TORCH, *args], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, 'PYTHONPATH': str(ROOT)}, timeout=120)
    assert r.stdout.strip().endswith('exit 2 torch not imported'), (r.stdout, r.stderr)
    assert words in r.stderr


@pytest.mark.parametrize('new, old', [(['--train-persons', '3'], ['--persons', '3'])])
def test_renamed_options_keep_their_old_spelling_out_of_the_help(tmp_path, new, old):
    "one meaning per name (--persons is predict's mode); scripts with the old spelling still run"
    a, b = cli('synth', tmp_path / 'a', *new, '--eval-persons', '1', cwd=tmp_path), \
        cli('synth', tmp_path / 'b', *old, '--eval-persons', '1', cwd=tmp_path)
    assert a.returncode == b.returncode == 0 and a.stdout.replace(str(tmp_path / 'a'), '') == \
        b.stdout.replace(str(tmp_path / 'b'), '') and '3 persons' in a.stdout
    import typer.main

    from mcls.cli import app
    cmds = typer.main.get_command(app).commands
    shown = {n: {o for p in c.params if not getattr(p, 'hidden', False) for o in getattr(p, 'opts', [])}
             for n, c in cmds.items()}
    assert '--persons' in shown['predict'] and not any('--persons' in shown[c] for c in ('synth', 'demo'))
    assert {'--out-dir'} <= shown['eda'] & shown['demo']
    assert {'--plot'} <= shown['evaluate'] & shown['lr-find'] & shown['compare']
    assert not any('--out' in shown[c] for c in ('eda', 'demo', 'evaluate', 'lr-find'))
    assert '-m' in shown['interpret']


@pytest.mark.parametrize('args, match', [
    (['lr-find', 'joint', '--num-it', '8'], 'num-it'),
    (['compare', 'a', 'b', '--seed', '-1'], 'seed'),
    (['compare', 'a', 'b', '--draws', '0'], 'draws'),
    (['synth', 'd', '--train-persons', '-2'], 'train-persons'),
    (['train', 'joint', '--resume', '--lr', '1e-3'], '--resume continues a run .* drop --lr'),
    (['train', 'joint', '--resume', '--set', 'joint.epochs=2'], 'drop --set joint.epochs=2'),
])
def test_command_line_numbers_and_resume_flags_are_checked_in_one_line(tmp_path, args, match):
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert re.search(match, r.stderr.replace('\n', ' ')), r.stderr


def test_every_error_a_user_can_fix_is_one_class_the_cli_catches():
    from mcls import errors
    fixable = [getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type)]
    assert SettingsError in fixable and all(issubclass(c, errors.FixableError) for c in fixable)
    assert issubclass(errors.WriteError, OSError) and issubclass(errors.DataError, ValueError)


def test_version_is_printed(tmp_path):
    from mcls import __version__
    r = cli('--version', cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f'mcls {__version__}'


def test_help_pages_show_no_python_types(tmp_path):
    for cmd in ('', 'train', 'predict', 'predict-image', 'compare', 'runs'):
        out = cli(*cmd.split(), '--help', cwd=tmp_path).stdout
        assert '<bool>' not in out and 'list[' not in out and 'mcls.' not in out, (cmd, out)


@pytest.mark.cli
@pytest.mark.parametrize('setting,words', [('crop.size=0', ['[crop] size']), ('predict.batch=0', ['[predict] batch']),
                                           ('predict.tta_passes=0', ['tta_passes']), ('train.workers=-1', ['workers']),
                                           ('crop.fallback_crop=300', ['fallback_crop'])])
def test_bad_values_are_one_line_on_the_command_line(tmp_path, setting, words):
    one_line_error(_cli('predict', '--set', setting, cwd=tmp_path), *words)


@pytest.mark.parametrize('command,make', [
    (['predict', '--out', '{root}/out'], 'dir'),
    (['train', 'mask', '--export-dir', '{root}/out'], 'file'),
    (['train', 'mask', '--set', 'paths.runs={root}/out'], 'file'),
    (['crop', '--set', 'paths.cache={root}/out'], 'file'),
    (['predict', '--out', '{root}/out/sub.csv'], 'file'),
])
def test_outputs_of_the_wrong_kind_are_refused_before_any_work(synth_root, command, make):
    out = synth_root / 'out'
    out.mkdir() if make == 'dir' else out.write_text('x')
    args = [a.format(root=synth_root) for a in command]
    r = _cli(*args, '--data', synth_root / 'data', *(['--no-pretrained'] if 'train' in args else []),
             '--set', f'paths.cache={synth_root / "crops"}' if 'paths.cache' not in ' '.join(args) else 'crop.size=64',
             '--set', f'paths.models={synth_root / "models"}', cwd=synth_root)
    one_line_error(r, str(out))
    assert not (synth_root / 'crops').exists() and not (synth_root / 'runs').exists()


def test_cli_errors_are_one_line_with_nothing_else_on_stderr(synth_root):
    "a spread of bad inputs through the real entry point: third-party warnings must not reach stderr either"
    info, answers = _info(synth_root), synth_root / 'data' / 'eval' / 'answers.csv'
    for p in (info, answers): p.write_text(p.read_text() + p.read_text().splitlines()[1] + '\n')
    one_line_error(_cli('crop', '--split', 'eval', '--data', synth_root / 'data', cwd=synth_root), 'listed twice')
    one_line_error(_cli('evaluate', answers, answers, cwd=synth_root), 'appears twice')
    one_line_error(_cli('train', 'mask', '--data', synth_root / 'data', '--no-pretrained', '--set', 'mask.lr=-1',
                        cwd=synth_root), '[mask] lr')


@pytest.mark.cli
@needs_read_only
@pytest.mark.parametrize('args', [('predict', '--out', str(READ_ONLY / 'sub.csv')),
                                  ('compare', 'a', 'b', '--json', str(READ_ONLY / 'c.json')),
                                  ('compare', 'a', 'b', '--plot', str(READ_ONLY / 'c.png'))])
def test_outputs_in_a_read_only_folder_are_refused_before_the_work(tmp_path, args):
    r = _cli(*args, '--set', f'paths.cache={tmp_path / "crops"}', cwd=tmp_path)
    one_line_error(r, str(READ_ONLY), 'does not take new files')
    assert not (tmp_path / 'crops').exists()


def test_output_folders_are_probed_too(tmp_path):
    from mcls.atomic import output_dir, output_file
    assert output_file(tmp_path / 'new' / 'sub.csv', 'x') == tmp_path / 'new' / 'sub.csv'   # a folder still to make
    assert list(tmp_path.iterdir()) == []                                                  # the probe left nothing
    if READ_ONLY.is_dir():
        with pytest.raises(WriteError, match='does not take new files'): output_dir(READ_ONLY, 'the cache')


@pytest.mark.cli
@needs_read_only
@pytest.mark.parametrize('args', [('suspects', 'age', '--set', f'paths.reports={READ_ONLY}/reports'),
                                  ('eda', '--out-dir', str(READ_ONLY / 'eda')),
                                  ('interpret', 'age', '--set', f'paths.reports={READ_ONLY}/reports')])
def test_report_folders_are_probed_before_the_work(trained, tmp_path, args):
    "suspects would train folds, interpret and eda read every photo, before writing their reports"
    extra = ['--models', str(trained['models'])] if args[0] == 'interpret' else []
    r = _cli(*args, *extra, '--data', trained['root'] / 'data', '--set', f'paths.cache={tmp_path / "crops"}',
             '--set', f'paths.models={tmp_path / "models"}', cwd=tmp_path)
    one_line_error(r, str(READ_ONLY), 'does not take new files')
    assert not (tmp_path / 'crops').exists() and not (tmp_path / 'models').exists()


def test_resume_with_a_run_resumes_that_run_once(tmp_path, monkeypatch):
    "item 5: `train all --resume --run R` resumed R three times; without --run, finished runs are left alone."
    import dataclasses

    import mcls.cli as C
    import mcls.train as T
    s = tiny_settings(tmp_path)
    s = dataclasses.replace(s, paths=dataclasses.replace(s.paths, runs=tmp_path / 'runs'))
    for name, status in (('20260101-000000-mask-fold0', 'done'), ('20260101-000100-age-fold0', 'interrupted')):
        (tmp_path / 'runs' / name).mkdir(parents=True)
        (tmp_path / 'runs' / name / 'run.json').write_text(json.dumps({'status': status}))
    calls = []
    monkeypatch.setattr(T, 'resume_task', lambda run, *a, **k: calls.append(Path(run).name) or 'result')
    assert C._resume(s, ['mask', 'age', 'gender'], Path('runs/R'), None, None) == ['result'] and calls == ['R']
    calls.clear()
    assert C._resume(s, ['mask', 'age', 'gender'], None, None, None) == ['result']
    assert calls == ['20260101-000100-age-fold0']


def test_only_mcls_errors_become_one_line(monkeypatch, capsys):
    "A bug keeps its traceback (exit 1 through typer's handler); a user error is one stderr line and exit 2."
    import mcls.cli as C

    def bug(**kw): raise RuntimeError('a bug')
    monkeypatch.setattr(C, 'app', bug)
    with pytest.raises(RuntimeError): C.run()

    def user(**kw): raise DataError('train.csv: not found. Point --data at the layout.')
    monkeypatch.setattr(C, 'app', user)
    with pytest.raises(SystemExit) as e: C.run()
    err = capsys.readouterr()
    assert e.value.code == 2 and err.err.strip().startswith('error:') and not err.out
    assert len(err.err.strip().splitlines()) == 1

