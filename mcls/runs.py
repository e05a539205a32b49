"""Run folders: their run.json, finding and listing past training runs (light: `mcls runs` needs no torch)."""
from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pandas as pd

from .atomic import process_alive, process_start, write_text_atomic

__all__ = ['RUN_FILE', 'read_run', 'update_run', 'process_fields', 'data_fingerprint', 'latest_run', 'run_status',
           'list_runs', 'diff_runs']

RUN_FILE = 'run.json'


def read_run(run_dir: Path) -> dict:
    "A run's run.json (OSError or ValueError when missing or cut off)."
    return json.loads((Path(run_dir) / RUN_FILE).read_text())


def update_run(run_dir: Path, **fields) -> dict:
    """Merge `fields` into run.json, atomically; where the atomic write fails (a full disk has no room for the
    copy), the small file is rewritten in place, which needs no new space."""
    path = Path(run_dir) / RUN_FILE
    try:
        meta = read_run(run_dir)
    except (OSError, ValueError):
        meta = {}
    meta.update(fields)
    text = json.dumps(meta, indent=1)
    try:
        write_text_atomic(path, text)
    except OSError:
        with open(path, 'r+' if path.exists() else 'w') as fh:
            fh.truncate(0)
            fh.write(text)
    return meta


def process_fields() -> dict:
    "Who is training: what `run_status` needs to tell a live run from one whose process was killed."
    return {'pid': os.getpid(), 'pid_start': process_start(os.getpid()), 'host': socket.gethostname()}


def data_fingerprint(table: pd.DataFrame) -> str:
    "The training photos, their labels and folds (pseudo-labelled rows aside): what a resumed run must find again."
    rows = table[~table.pseudo] if 'pseudo' in table else table
    keys = (rows.folder.astype(str) + '/' + rows.stem.astype(str) + ',' + rows.person.astype(str) + ','
            + rows['mask'].astype(str) + ',' + rows.gender.astype(str) + ',' + rows.age.astype(str) + ','
            + rows.fold.astype(str))
    return hashlib.sha1('\n'.join(sorted(keys)).encode()).hexdigest()[:16]


def _status(meta: dict) -> str | None:
    "The recorded status, except that a 'training' run whose process is gone (killed, even by -9) is interrupted."
    status = meta.get('status')
    if (status == 'training' and 'pid' in meta and meta.get('host') == socket.gethostname()
            and not process_alive(int(meta['pid']), meta.get('pid_start'))):
        return 'interrupted'
    return status


def run_status(run_dir: Path) -> str | None:
    "A run's status (training, done, failed, interrupted), None when run.json is unreadable."
    try:
        return _status(read_run(run_dir))
    except (OSError, ValueError):
        return None


def latest_run(runs: Path, task: str) -> Path:
    "The newest run folder of `task` (run folders are named by start time)."
    from .errors import UserError
    cands = sorted(p for p in Path(runs).glob(f'*-{task}-*') if (p / RUN_FILE).exists())
    if not cands: raise UserError(f'no run of {task} under {runs}: nothing to resume; train it without --resume')
    return cands[-1]


def list_runs(runs: Path) -> pd.DataFrame:
    "Past runs with their scores, best first; `reason` says why a run failed or cannot be read."
    rows = []
    for p in Path(runs).glob(f'*/{RUN_FILE}'):
        try:
            m = json.loads(p.read_text())
            if not isinstance(m, dict): raise ValueError('not a JSON object')
        except (OSError, ValueError) as e:   # cut off by a kill or a full disk: listed as damaged, never dropped
            m = {'status': 'damaged', 'error': f'{RUN_FILE} unreadable ({type(e).__name__}); delete the folder or '
                                              f'train again'}
        rows.append({'run': p.parent.name, 'task': m.get('task'), 'fold': m.get('fold'), 'status': _status(m),
                     'valid_f1': m.get('valid_f1'), 'valid_acc': m.get('valid_acc'), 'epochs': m.get('epochs'),
                     'arch': m.get('arch'), 'images_per_s': m.get('images_per_s'),
                     'reason': (m.get('error') or '')[:100] or None})
    df = pd.DataFrame(rows, columns=['run', 'task', 'fold', 'status', 'valid_f1', 'valid_acc', 'epochs', 'arch',
                                     'images_per_s', 'reason'])
    df = df.astype({'fold': 'Int64', 'epochs': 'Int64'})      # whole numbers, missing beside a damaged row
    return df.sort_values(['valid_f1', 'run'], ascending=[False, False], na_position='last').reset_index(drop=True)


def diff_runs(a: Path, b: Path) -> list[tuple[str, str, str]]:
    """(setting, value in A, value in B) for every resolved setting that differs between two run folders (their
    saved settings.ini files; paths left out: every run has its own)."""
    from .errors import UserError
    from .settings import SettingsError, load_settings
    raws = []
    for d in (Path(a), Path(b)):
        try:
            raws.append(load_settings(d / 'settings.ini', standalone=True).raw)
        except SettingsError as e:
            raise UserError(f'{d}: not a run folder with a readable settings.ini ({e})') from None
    keys = sorted({(sec, k) for raw in raws for sec, kv in raw.items() if sec != 'paths' for k in kv})
    return [(f'{sec}.{k}', raws[0].get(sec, {}).get(k, '-'), raws[1].get(sec, {}).get(k, '-')) for sec, k in keys
            if raws[0].get(sec, {}).get(k) != raws[1].get(sec, {}).get(k)]

