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


def test_label_review_buttons_write_the_corrections_file(tmp_path, monkeypatch):
    import pandas as pd
    from mcls.dataset import LoadReport, load_train
    make_dataset(tmp_path / 'data', persons=4, eval_persons=1, seed=4)
    table = load_train(tmp_path / 'data')
    person, given = table.person.iloc[0], table.gender.iloc[0]
    (tmp_path / 'reports').mkdir()
    pd.DataFrame({'key': [person, table.person.iloc[7]], 'field': 'gender', 'given': ['x', 'y'],
                  'suggested': ['female' if given == 0 else 'male', 'y'], 'value': ['female' if given == 0 else 'male', 'y'],
                  'score': [0.01, 0.9], 'crop': [table.file.iloc[6], table.file.iloc[13]]}).to_csv(
        tmp_path / 'reports' / 'suspects_gender.csv', index=False)
    corr = tmp_path / 'fixes.csv'
    monkeypatch.setenv('MCLS_SET', ' '.join(f'{k}={v}' for k, v in tiny_overrides(
        tmp_path, 1, **{'paths.corrections': corr}).items()))
    monkeypatch.chdir(tmp_path)
    ns = run_notebook(NBS / '03_label_review.ipynb')
    assert len(ns['cards']) == 1 and not corr.exists()           # only disagreeing suspects get a card
    ns['cards'][0][1].click()
    report = LoadReport()
    fixed = load_train(tmp_path / 'data', corr, report)
    assert report.correction_rows == 1 and report.corrections == 7
    assert (fixed[fixed.person == person].gender != given).all()
