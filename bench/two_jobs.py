"""Two mcls trainings on one machine: one after the other, both at once with each job's default threads, and both
at once with the cores split between them (`--set train.threads=N`). Prints the wall time of each way and writes a
JSON.

    python -m bench.two_jobs --data data/mf600 --cache data/crops600

Each job is `mcls train joint --epochs 1` of the protocol's model (lite0, local weights) on fold 0 of the build: about
a minute alone on 2 cores. Both jobs read the same crop cache (filled first); each has its own runs and export folder.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from bench.common import RESULTS, ROOT, WEIGHTS
from mcls.threads import cores as usable_cores
from mcls.atomic import write_text_atomic


def job(a, work: Path, i: int, threads: str | None) -> list[str]:
    cmd = [sys.executable, '-m', 'mcls', 'train', 'joint', '--data', str(a.data), '--set', f'paths.cache={a.cache}',
           '--set', f'paths.runs={work}/runs{i}', '--export-dir', str(work / f'models{i}'), '--arch',
           'tf_efficientnet_lite0', '--weights', str(a.weights), '--epochs', str(a.epochs), '--set', 'split.seed=777']
    return cmd + (['--set', f'train.threads={threads}'] if threads else [])


def run_jobs(cmds: list[list[str]], together: bool, limit: float) -> dict:
    "Wall seconds of each job and of all, started together or one after the other."
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}    # each job's own default
    t0, each = time.perf_counter(), []
    if together:
        procs = [(subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), time.perf_counter())
                 for c in cmds]
        ends = {}
        while len(ends) < len(procs) and time.perf_counter() - t0 < limit:
            for k, (p, _) in enumerate(procs):
                if k not in ends and p.poll() is not None: ends[k] = time.perf_counter()
            time.sleep(0.2)
        for k, (p, start) in enumerate(procs):
            if k not in ends: p.kill(); p.wait()
            each.append(round(ends[k] - start, 1) if k in ends else None)
            if p.returncode: print(p.stderr.read().decode()[-1500:], file=sys.stderr)
    else:
        for c in cmds:
            t = time.perf_counter()
            r = subprocess.run(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=limit)
            if r.returncode: print(r.stderr.decode()[-1500:], file=sys.stderr)
            each.append(round(time.perf_counter() - t, 1))
    return {'jobs_seconds': each, 'wall_seconds': round(time.perf_counter() - t0, 1) if None not in each else None}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', type=Path, required=True)
    ap.add_argument('--cache', type=Path, required=True)
    ap.add_argument('--weights', type=Path, default=WEIGHTS)
    ap.add_argument('--epochs', type=int, default=1)
    ap.add_argument('--limit', type=float, default=1200, help='seconds a way may take before its jobs are stopped')
    ap.add_argument('--work', type=Path, default=ROOT / 'runs' / 'bench-two-jobs')
    ap.add_argument('--out', type=Path, default=RESULTS / f'two-jobs-{date.today()}.json')
    a = ap.parse_args(argv)
    cores = usable_cores()
    share = str(max(1, cores // 2))
    ways = {'one after the other (threads = auto)': (False, None),
            'together, threads = auto': (True, None),
            f'together, threads = {share} each': (True, share)}
    result = {'cores': cores, 'epochs': a.epochs, 'data': str(a.data), 'ways': {},
              'command': ' '.join(['python -m bench.two_jobs', *(argv if argv is not None else sys.argv[1:])])}
    shutil.rmtree(a.work, ignore_errors=True)
    subprocess.run(job(a, a.work, 9, None)[:4] + ['--help'],
                   stdout=subprocess.DEVNULL)     # imports warm in the page cache
    for name, (together, threads) in ways.items():
        shutil.rmtree(a.work, ignore_errors=True)
        r = run_jobs([job(a, a.work, i, threads) for i in (1, 2)], together, a.limit)
        result['ways'][name] = r
        print(f'{name}: jobs {r["jobs_seconds"]} s, both done in {r["wall_seconds"]} s', flush=True)
        write_text_atomic(a.out, json.dumps(result, indent=1))
    base = result['ways']['one after the other (threads = auto)']['wall_seconds']
    for name, r in result['ways'].items():
        if r['wall_seconds']: print(f'{name}: {base / r["wall_seconds"]:.2f}x the speed of one after the other')
    print(f'wrote {a.out}')


if __name__ == '__main__':
    main()
