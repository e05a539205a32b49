"""The full-scale default on one CUDA GPU: the submission recipe on every training person of the whole maskfaces
build, for each row asked (the default at 224 px, and the rows of docs/quality.md's full-scale screen), with its
training images/s and eval F1 in one JSON. Each row is one learning-curve point at all persons (bench.curve).

    python -m bench.gpu_full --data data/maskfaces --cache data/crops-full
    python -m bench.gpu_full --quick                 # tiny settings on the CPU: checks the script runs

Weights: .dev/weights where ../shared/tools/device-prep.sh staged them (a GPU machine has no ../shared), else
../shared/weights. Every row is the GPU profile (configs/gpu.ini) with that backbone in place of the hub's. The JSON
is rewritten after every row, so a failing row keeps the rows before it.
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path

import torch

from bench import curve
from bench.common import RESULTS, ROOT, SHARED
from mcls.atomic import write_text_atomic
from mcls.settings import GPU_PROFILE

__all__ = ['ROWS', 'main']

# name -> (arch, --set overrides of the GPU profile, configs/gpu.ini)
ROWS = {
    'default224': ('tf_efficientnet_lite0', []),
    'lite2_224': ('tf_efficientnet_lite2', []),
    'epochs10_224': ('tf_efficientnet_lite0', ['joint.full_epochs=10']),
}
STAGED = ROOT / '.dev' / 'weights'      # device-prep.sh's copies


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rows', nargs='+', default=['default224', 'lite2_224'], choices=sorted(ROWS))
    ap.add_argument('--data', type=Path, help='the whole maskfaces build')
    ap.add_argument('--cache', type=Path)
    ap.add_argument('--weights-dir', type=Path, default=STAGED if STAGED.is_dir() else SHARED / 'weights')
    ap.add_argument('--persons', type=int, default=max(curve.SIZES))
    ap.add_argument('--seed', type=int, default=777)
    ap.add_argument('--work', type=Path, default=curve.WORK.with_name('gpu_full'))
    ap.add_argument('--quick', action='store_true', help='tiny synthetic data and model on any device')
    ap.add_argument('--out', type=Path)
    a = ap.parse_args(argv)
    a.cache = a.cache or a.work / 'crops'
    out = a.out or RESULTS / f'gpu-full-{datetime.now():%Y-%m-%d}.json'
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'
    res = {'date': datetime.now().isoformat(timespec='seconds'), 'device': device, 'torch': torch.__version__,
           'persons': a.persons, 'seed': a.seed, 'rows': {}}
    for name in a.rows:
        arch, sets = ROWS[name]
        args = ['point', '--persons', str(a.persons if not a.quick else 12), '--seed', str(a.seed),
                '--work', str(a.work / name)]
        if a.quick: args.append('--quick')
        else:
            args += ['--config', str(ROOT / GPU_PROFILE), '--weights', str(a.weights_dir / f'{arch}.in1k.safetensors'),
                     '--set', f'train.arch={arch}',
                     *(x for kv in sets for x in ('--set', kv))]
        if a.data: args += ['--data', str(a.data)]
        args += ['--cache', str(a.cache)]
        t0 = time.perf_counter()
        pt = curve.main(args)
        run = max((a.work / name / f'p{pt["persons"]}' / 'runs').glob('*/run.json'), key=lambda p: p.stat().st_mtime)
        meta = json.loads(run.read_text())
        res['rows'][name] = {'arch': arch, 'sets': sets, 'wall_s': time.perf_counter() - t0,
                             'train_images_per_s': meta.get('train_images_per_s'), 'precision': meta.get('precision'),
                             'eval': pt['default'], 'floor_eval_f1_18': pt['probe_floor']['f1_18'],
                             'seconds': pt['seconds']}
        write_text_atomic(out, json.dumps(res, indent=1, default=float))
    print(json.dumps({k: {'images_per_s': v['train_images_per_s'], 'f1_18': v['eval']['f1_18']}
                      for k, v in res['rows'].items()}, indent=1, default=float))
    return res


if __name__ == '__main__':
    main()
