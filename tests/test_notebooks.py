import json
from pathlib import Path

import matplotlib
import pytest

from mcls.synth import make_dataset
from mcls.demo import tiny_overrides

NBS = Path(__file__).parents[1] / 'nbs'


def run_notebook(path: Path):
    "Execute a notebook's code cells in order, in one namespace (no kernel needed)."
    ns = {}
    for cell in json.loads(path.read_text())['cells']:
        if cell['cell_type'] == 'code': exec(compile(''.join(cell['source']), str(path), 'exec'), ns)
    return ns


@pytest.mark.parametrize('name', ['01_eda.ipynb', '02_lr_find.ipynb'])
def test_notebook_runs(tmp_path, monkeypatch, name):
    matplotlib.use('Agg')
    make_dataset(tmp_path / 'data', persons=10, eval_persons=2, seed=4)
    sets = tiny_overrides(tmp_path, 1, **{'train.workers': 0})
    monkeypatch.setenv('MCLS_SET', ' '.join(f'{k}={v}' for k, v in sets.items()))
    monkeypatch.setenv('MCLS_LR_ITERS', '30')
    monkeypatch.chdir(tmp_path)
    ns = run_notebook(NBS / name)
    if name.startswith('01'):
        assert all(p.exists() for p in ns['paths']) and len(ns['df']) == 12 * 7
    else:
        assert ns['suggestions'].valley > 0
