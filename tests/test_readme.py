"""Every command the README shows runs, in order, on tiny synthetic data with tiny settings (as the demo's), from a
folder laid out as a checkout: a README command that breaks fails here. The first block (set-up and the test suite)
is what CI itself runs."""
import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mcls.demo import tiny_overrides
from mcls.settings import load_settings
from mcls.synth import make_dataset

pytestmark = pytest.mark.cli
ROOT = Path(__file__).parents[1]
FENCE = re.compile(r'```(\w+)\n(.*?)```', re.S)


def readme_blocks() -> list[tuple[str, str]]:
    "(language, text) of every fenced block of the README, in order."
    return FENCE.findall((ROOT / 'README.md').read_text())


def test_the_first_block_is_what_ci_runs():
    lang, first = readme_blocks()[0]
    ci = (ROOT / '.ci' / 'run').read_text()
    commands = [l.split('#')[0].strip() for l in first.splitlines() if l.strip()]
    assert lang == 'bash' and len(commands) == 2
    assert all(c in ci for c in commands)


def _tiny_checkout(root: Path):
    "A folder as the README's loop assumes: synthetic data at the default data path, tiny settings, configs/."
    make_dataset(root / 'data' / 'maskfaces', persons=24, eval_persons=4, seed=3)
    ov = tiny_overrides(root, 1, **{'paths.data': 'data/maskfaces', 'paths.cache': 'data/crops', 'paths.runs': 'runs',
                                    'paths.models': 'models', 'paths.reports': 'reports',
                                    'predict.out': 'submission.csv', 'train.workers': '0', 'train.batch': '8'})
    (root / 'settings.ini').write_text(load_settings(overrides=ov, cwd=root).to_ini())
    shutil.copytree(ROOT / 'configs', root / 'configs')
    shutil.copy(next((root / 'data' / 'maskfaces' / 'eval' / 'images').iterdir()), root / 'my_photo.jpg')
    # a profile in --config layers over ./settings.ini: the tiny model again on top, as the last layer
    tiny = ' '.join(f'--set {k}={v}' for k, v in ov.items() if k.startswith('train.') or k.endswith('epochs'))
    return (f'mcls() {{ case " $* " in *" --config "*) "{sys.executable}" -m mcls "$@" {tiny};; '
            f'*) "{sys.executable}" -m mcls "$@";; esac; }}\nset -e\n')


def _merge_ini(path: Path, text: str):
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(path)
    cp.read_string(text)
    with open(path, 'w') as fh: cp.write(fh)


def test_every_readme_command_runs_on_tiny_data(tmp_path):
    prelude = _tiny_checkout(tmp_path)
    env = {**os.environ, 'COLUMNS': '200', 'HF_HUB_OFFLINE': '1'}
    ran = []
    for lang, text in readme_blocks()[1:]:
        if lang == 'ini':
            _merge_ini(tmp_path / 'settings.ini', text)
            continue
        if lang != 'bash': continue
        for line in (l for l in text.splitlines() if l.strip() and not l.lstrip().startswith('#')):
            r = subprocess.run(['bash', '-c', prelude + line], cwd=tmp_path, capture_output=True, text=True, env=env,
                               timeout=600)
            assert r.returncode == 0, f'README command failed: {line}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}'
            # off a terminal: lines a log can hold, no redrawn progress bars
            assert '\r' not in r.stdout + r.stderr and '\u2588' not in r.stdout + r.stderr, (line, r.stdout[-500:])
            ran.append((line.split('#')[0].strip(), r.stdout))
    assert len(ran) >= 15
    assert (tmp_path / 'submission.csv').exists() and (tmp_path / 'models' / 'b' / 'fold0').is_dir()
    # the label-fix loop: the accepted fixes are in the file the settings name, and the next training applies them
    accepted = next(i for i, (c, _) in enumerate(ran) if '--accept' in c)
    assert (tmp_path / 'data' / 'corrections.csv').exists()
    applied = re.search(r'label fixes applied \(corrections rows\)\s*\W*\s*(\d+)', ran[accepted + 1][1])
    assert applied and int(applied.group(1)) > 0, ran[accepted + 1][1][-2000:]
