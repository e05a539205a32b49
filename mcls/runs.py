"""Run folders: finding and listing past training runs (light: `mcls runs` needs no torch)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

__all__ = ['latest_run', 'run_status', 'list_runs']


def latest_run(runs: Path, task: str) -> Path:
    "The newest run folder of `task` (run folders are named by start time)."
    from .errors import UserError
    cands = sorted(p for p in Path(runs).glob(f'*-{task}-*') if (p / 'run.json').exists())
    if not cands: raise UserError(f'no run of {task} under {runs}: nothing to resume; train it without --resume')
    return cands[-1]


def run_status(run_dir: Path) -> str | None:
    "A run's status from its run.json (training, done, failed, interrupted), None when unreadable."
    try:
        return json.loads((Path(run_dir) / 'run.json').read_text()).get('status')
    except (OSError, ValueError):
        return None


def list_runs(runs: Path) -> pd.DataFrame:
    "Past runs with their scores, best first."
    rows = []
    for p in Path(runs).glob('*/run.json'):
        try:
            m = json.loads(p.read_text())
        except (OSError, ValueError):   # a run.json cut off by a kill: the run is listed by its other runs
            continue
        rows.append({'run': p.parent.name, 'task': m.get('task'), 'fold': m.get('fold'), 'status': m.get('status'),
                     'valid_f1': m.get('valid_f1'), 'valid_acc': m.get('valid_acc'), 'epochs': m.get('epochs'),
                     'arch': m.get('arch'), 'images_per_s': m.get('images_per_s')})
    df = pd.DataFrame(rows, columns=['run', 'task', 'fold', 'status', 'valid_f1', 'valid_acc', 'epochs', 'arch',
                                     'images_per_s'])
    return df.sort_values(['valid_f1', 'run'], ascending=[False, False], na_position='last').reset_index(drop=True)
