"""The notebooks, executed through a Jupyter kernel (nbclient) as a user runs them, from a folder with its own
settings.ini: the test sets the notebook's parameters cell (papermill's convention) and appends cells that assert
on the notebook's own variables inside the kernel."""
from pathlib import Path

import pytest

# the [test] extra (setup.sh installs it); a machine without it, the GPU device's image among them, skips these
nbformat = pytest.importorskip('nbformat', reason='the notebooks run through nbformat/nbclient: pip install .[test]')
NotebookClient = pytest.importorskip('nbclient',
                                     reason='the notebooks run through nbclient: pip install .[test]').NotebookClient

from mcls.demo import tiny_overrides  # noqa: E402
from mcls.settings import load_settings  # noqa: E402
from mcls.synth import make_dataset  # noqa: E402

NBS = Path(__file__).parents[1] / 'nbs'
pytestmark = pytest.mark.notebooks


def run_notebook(path: Path, params: dict, *checks: str):
    "Execute the notebook with its parameters cell set to `params`, then the `checks` cells in the same kernel."
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if 'parameters' in c.metadata.get('tags', []))
    cell.source = '\n'.join(f'{k} = {v!r}' for k, v in params.items())
    nb.cells += [nbformat.v4.new_code_cell(c) for c in checks]
    NotebookClient(nb, timeout=300, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}}).execute()
    return nb


def _folder(root: Path, persons: int, **extra) -> str:
    "A folder as a user runs mcls from: synthetic data and a settings.ini of tiny settings."
    make_dataset(root / 'data', persons=persons, eval_persons=2, seed=4)
    (root / 'settings.ini').write_text(load_settings(overrides=tiny_overrides(root, 1, **{'train.workers': 0, **extra}),
                                                     cwd=root).to_ini())
    return str(root)


@pytest.mark.parametrize('name', ['01_eda.ipynb', '02_lr_find.ipynb'])
def test_notebook_runs(tmp_path, name):
    root = _folder(tmp_path, 10)
    params = {'root': root} if name.startswith('01') else {'root': root, 'task': 'mask', 'num_it': 30}
    check = ('assert all(p.exists() for p in paths) and len(df) == 12 * 7' if name.startswith('01')
             else 'assert suggestions.valley > 0')
    run_notebook(NBS / name, params, check)


def test_every_notebook_has_a_parameters_cell_and_no_test_hook():
    for path in NBS.glob('*.ipynb'):
        nb = nbformat.read(path, as_version=4)
        assert any('parameters' in c.metadata.get('tags', []) for c in nb.cells), path.name
        assert 'MCLS_' not in ''.join(c.source for c in nb.cells), path.name


def test_label_review_buttons_write_the_corrections_file(tmp_path):
    import pandas as pd

    from mcls.dataset import LoadReport, load_train
    corr = tmp_path / 'fixes.csv'
    root = _folder(tmp_path, 4, **{'paths.corrections': corr})
    table = load_train(tmp_path / 'data')
    person, given = table.person.iloc[0], table.gender.iloc[0]
    (tmp_path / 'reports').mkdir()
    pd.DataFrame({'key': [person, table.person.iloc[7]], 'field': 'gender', 'given': ['x', 'y'],
                  'suggested': ['female' if given == 0 else 'male', 'y'], 'value': ['female' if given == 0 else 'male',
                                                                                    'y'],
                  'score': [0.01, 0.9], 'crop': [table.file.iloc[6], table.file.iloc[13]]}).to_csv(
        tmp_path / 'reports' / 'suspects_gender.csv', index=False)
    run_notebook(NBS / '03_label_review.ipynb', {'root': root, 'task': 'gender', 'shown': 12},
                 # only the disagreeing suspect gets a card; nothing is written before a click
                 f'assert len(cards) == 1 and not __import__("pathlib").Path({str(corr)!r}).exists()',
                 'cards[0][1].click()')
    report = LoadReport()
    fixed = load_train(tmp_path / 'data', corr, report)
    assert report.correction_rows == 1 and report.corrections == 7
    assert (fixed[fixed.person == person].gender != given).all()
