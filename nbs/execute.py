"""Store the notebooks with their outputs, so that a reader on a code host sees the tables and plots: each runs on
the demo's synthetic data (tiny settings) in a scratch folder and is written back with its parameters cell as
shipped. `mcls suspects gender` ranks the suspects the review notebook shows.

    python nbs/execute.py                  # about two minutes on 2 CPU cores
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from mcls.demo import tiny_overrides
from mcls.settings import load_settings
from mcls.synth import make_dataset

NBS = Path(__file__).resolve().parent
PARAMS = {'02_lr_find.ipynb': {'num_it': 60}}     # fewer rates than a user's 100: tiny data, short epochs


def execute(path: Path, root: Path):
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if 'parameters' in c.metadata.get('tags', []))
    shipped = cell.source
    params = {'root': str(root), **PARAMS.get(path.name, {})}
    cell.source = '\n'.join([shipped, *(f'{k} = {v!r}' for k, v in params.items())])
    NotebookClient(nb, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(root)}}).execute()
    cell.source, cell.outputs, cell.execution_count = shipped, [], None
    nbformat.write(nb, path)


def main():
    with tempfile.TemporaryDirectory(prefix='mcls-notebooks-') as tmp:
        root = Path(tmp)
        make_dataset(root / 'data' / 'maskfaces', persons=100, eval_persons=25, seed=0)     # the demo's data
        rel = {'paths.data': 'data/maskfaces', 'paths.cache': 'data/crops', 'paths.runs': 'runs',
               'paths.models': 'models', 'paths.reports': 'reports', 'predict.out': 'submission.csv'}
        ov = tiny_overrides(root, 2, **{'train.workers': 0, 'train.batch': 32, **rel})
        (root / 'settings.ini').write_text(load_settings(overrides=ov, cwd=root).to_ini())
        subprocess.run([sys.executable, '-m', 'mcls', 'suspects', 'gender'], cwd=root, check=True,
                       env={**os.environ, 'COLUMNS': '120'}, stdout=subprocess.DEVNULL)
        for path in sorted(NBS.glob('*.ipynb')):
            execute(path, root)
            print(f'{path.name}: executed and stored with its outputs')


if __name__ == '__main__':
    main()
