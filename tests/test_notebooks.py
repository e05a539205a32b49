"""The notebooks, executed through a Jupyter kernel (nbclient) as a user runs them; each test appends cells that
assert on the notebook's own variables inside the kernel."""
from pathlib import Path

import pytest

# the [test] extra (setup.sh installs it); a machine without it, the GPU device's image among them, skips these
nbformat = pytest.importorskip('nbformat', reason='the notebooks run through nbformat/nbclient: pip install .[test]')
NotebookClient = pytest.importorskip('nbclient', reason='the notebooks run through nbclient: pip install .[test]').NotebookClient

from mcls.synth import make_dataset
from mcls.demo import tiny_overrides

NBS = Path(__file__).parents[1] / 'nbs'
pytestmark = pytest.mark.notebooks


def run_notebook(path: Path, cwd: Path, *checks: str):
    "Execute the notebook in a fresh kernel started in `cwd`, then the `checks` cells (assertions) in that kernel."
    nb = nbformat.read(path, as_version=4)
    nb.cells += [nbformat.v4.new_code_cell(c) for c in checks]
    NotebookClient(nb, timeout=300, kernel_name='python3', resources={'metadata': {'path': str(cwd)}}).execute()
    return nb


@pytest.mark.parametrize('name', ['01_eda.ipynb', '02_lr_find.ipynb'])
def test_notebook_runs(tmp_path, monkeypatch, name):
    make_dataset(tmp_path / 'data', persons=10, eval_persons=2, seed=4)
    sets = tiny_overrides(tmp_path, 1, **{'train.workers': 0})
    monkeypatch.setenv('MCLS_SET', ' '.join(f'{k}={v}' for k, v in sets.items()))
    monkeypatch.setenv('MCLS_LR_ITERS', '30')
    check = ('assert all(p.exists() for p in paths) and len(df) == 12 * 7' if name.startswith('01')
             else 'assert suggestions.valley > 0')
    run_notebook(NBS / name, tmp_path, check)


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
    run_notebook(NBS / '03_label_review.ipynb', tmp_path,
                 f'assert len(cards) == 1 and not __import__("pathlib").Path({str(corr)!r}).exists()',  # disagreeing only
                 'cards[0][1].click()')
    report = LoadReport()
    fixed = load_train(tmp_path / 'data', corr, report)
    assert report.correction_rows == 1 and report.corrections == 7
    assert (fixed[fixed.person == person].gender != given).all()
