"""How long a command takes to refuse what it can refuse without torch: three wrong command lines, each run --repeats
times in a fresh process on this tree and on a base commit (a git worktree), in one script; median seconds each
and the ratio base / this tree.

    python -m bench.cli_latency --base abe2c39
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.common import RESULTS, ROOT
from mcls.atomic import write_text_atomic

__all__ = ['COMMANDS', 'main']

COMMANDS = {
    'train joint --set joint.lr=-1': ['train', 'joint', '--set', 'joint.lr=-1'],
    'predict --models nowhere': ['predict', '--models', 'nowhere'],
    'train mask --fold 7': ['train', 'mask', '--fold', '7'],
}


def seconds(tree: Path, args: list[str], repeats: int) -> float:
    "Median wall seconds of `python -m mcls ARGS` run in `tree` (its own mcls package first on the path)."
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, '-m', 'mcls', *args], cwd=tree, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode != 2:
            raise SystemExit(f'{tree}: mcls {" ".join(args)} exited {r.returncode}: {r.stderr[-300:]}')
    return statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--base', default='abe2c39', help='the commit to compare with')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--out', type=Path)
    a = ap.parse_args(argv)
    res = {'date': datetime.now().isoformat(timespec='seconds'), 'base': a.base, 'repeats': a.repeats, 'commands': {}}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / 'base'
        subprocess.run(['git', 'worktree', 'add', '--detach', str(base), a.base], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for name, args in COMMANDS.items():      # interleaved: a busy moment hits both trees alike
                b, t = seconds(base, args, a.repeats), seconds(ROOT, args, a.repeats)
                res['commands'][name] = {'base_s': round(b, 3), 'this_s': round(t, 3), 'speedup': round(b / t, 2)}
                print(f'mcls {name}: {b:.2f} s at {a.base}, {t:.2f} s now ({b / t:.1f}x)', flush=True)
        finally:
            subprocess.run(['git', 'worktree', 'remove', '--force', str(base)], cwd=ROOT, capture_output=True)
    write_text_atomic(a.out or RESULTS / f'cli-latency-{datetime.now():%Y-%m-%d}.json', json.dumps(res, indent=1))
    return res


if __name__ == '__main__':
    main()
