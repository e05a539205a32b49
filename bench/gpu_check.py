"""The first-GPU check: one call on a GPU machine, with what ../shared/tools/device-prep.sh stages, that runs each step
a first user would and writes its JSON after every step (a step that fails is recorded and the next one runs):
import, `mcls crop` of the whole build on the detector's device with the centre-crop fallback share, the
GPU profile (configs/gpu.ini: `mcls train joint --full`, every training person, with the offline lite0 weights in
place of the hub's B3), `mcls predict` scored on the eval answers, `--engine onnx` where onnxruntime has the
provider for this device, and the README's test command. docs/scaling.md gives the device command.

    python -m bench.gpu_check --data /tmp/maskfaces --weights-dir .dev/weights --out $OUT/gpu_check.json
    python -m bench.gpu_check --quick        # tiny synthetic data and model on the CPU: checks the script runs
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from bench.common import RESULTS, ROOT, SHARED, Report, scaled_lr

__all__ = ['main']

TAIL = 1500           # characters of a failed step's output kept in the JSON


def _mcls(*args, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'mcls', *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, 'COLUMNS': '200'})


def _step(report: Report, name: str, fn):
    "Run one step; its figures, or its failure and the end of its output, go into the report at once."
    t0 = time.perf_counter()
    try:
        values = fn()
        ok = True
    except subprocess.CalledProcessError as e:
        values, ok = {'error': f'exit {e.returncode}', 'output': ((e.stdout or '') + (e.stderr or ''))[-TAIL:]}, False
    except subprocess.TimeoutExpired as e:
        values, ok = {'error': f'over its {e.timeout:.0f} s limit'}, False
    except Exception as e:  # noqa: BLE001 - a step's failure is a finding; the next step still runs
        values, ok = {'error': f'{type(e).__name__}: {e}'[:TAIL]}, False
    report.stage(name, time.perf_counter() - t0, ok=ok, **values)
    print(f'{name}: {"ok" if ok else "FAILED"} ({time.perf_counter() - t0:.1f} s) {values}', flush=True)
    return ok


def _checked(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if r.returncode: raise subprocess.CalledProcessError(r.returncode, r.args, r.stdout, r.stderr)
    return r


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', type=Path, help='the whole maskfaces build (with eval/answers.csv)')
    ap.add_argument('--weights-dir', type=Path, default=SHARED / 'weights', help='where tf_efficientnet_lite0 lies')
    ap.add_argument('--work', type=Path, default=ROOT / 'runs' / 'gpu_check')
    ap.add_argument('--size', type=int, help="default: the GPU profile's")
    ap.add_argument('--batch', type=int, help="default: the GPU profile's (its peak rate scaled by the linear rule)")
    ap.add_argument('--tests', default='-q', help="pytest's arguments, one string (default: the README's test command)")
    ap.add_argument('--limit', type=float, default=420, help='seconds any one step may take')
    ap.add_argument('--quick', action='store_true', help='tiny synthetic data and model: checks the script runs')
    ap.add_argument('--out', type=Path)
    a = ap.parse_args(argv)
    work = a.work
    from mcls.errors import WriteError
    report = Report(a.out or RESULTS / f'gpu-check-{datetime.now():%Y-%m-%d}.json',
                    date=datetime.now().isoformat(timespec='seconds'), host=platform.node(), quick=a.quick, ok=False)
    try:       # the JSON is where every step's result goes: a path that cannot take it stops the check before any
        report.save()
    except (WriteError, OSError) as e:
        raise SystemExit(f'--out {report.path}: cannot be written ({e}); give a file path in a writable folder')
    state: dict = {}

    def imports():
        import torch
        import mcls.crop  # noqa: F401 - facenet-pytorch, as mcls.crop checks it
        import fastai
        import timm
        cuda = torch.cuda.is_available()
        state['cuda'] = cuda
        return {'python': platform.python_version(), 'torch': torch.__version__, 'fastai': fastai.__version__,
                'timm': timm.__version__, 'cuda': cuda, 'device': torch.cuda.get_device_name(0) if cuda else 'cpu',
                'gpus': torch.cuda.device_count()}

    def settings():
        "The run's settings file: the full-scale default at --size and --batch, with the rate for that batch."
        from mcls.demo import tiny_overrides
        from mcls.settings import GPU_PROFILE, load_settings
        if a.quick:
            from mcls.synth import make_dataset
            data = work / 'data'
            if not (data / 'eval' / 'answers.csv').exists(): make_dataset(data, persons=15, eval_persons=3, seed=5)
            ov = tiny_overrides(work, 1, **{'split.folds': 3, 'train.workers': 0})
        else:     # the GPU profile, with the backbone whose weights work offline in place of the hub's
            data = a.data
            ov = {'train.arch': 'tf_efficientnet_lite0', 'train.pretrained': 'true',
                  'train.weights': str(a.weights_dir / 'tf_efficientnet_lite0.in1k.safetensors')}
            if a.size: ov['train.size'] = str(a.size)
            if a.batch: ov.update({'train.batch': str(a.batch), 'joint.lr': f'{scaled_lr(a.batch):g}'})
        ov.update({'paths.data': str(data), 'paths.cache': str(work / 'crops'), 'paths.runs': str(work / 'runs'),
                   'paths.models': str(work / 'models'), 'paths.reports': str(work / 'reports'),
                   'predict.out': str(work / 'submission.csv')})
        s = load_settings(None if a.quick else ROOT / GPU_PROFILE, overrides=ov)
        work.mkdir(parents=True, exist_ok=True)
        (work / 'check.ini').write_text(s.to_ini())
        state['data'] = data
        ts = s.tasks['joint']
        return {'data': str(data), 'arch': ts.arch, 'size': ts.size, 'batch': ts.batch, 'lr': ts.lr,
                'full_epochs': ts.full_epochs, 'precision': ts.precision}

    def crop():
        _checked(_mcls('crop', '--config', work / 'check.ini', timeout=a.limit))
        from mcls.crop import CENTRE, attach_crops
        from mcls.dataset import load_images
        from mcls.settings import load_settings
        s = load_settings(work / 'check.ini')
        df, _ = attach_crops(load_images(s.paths.data), s.crop, s.paths.cache, progress=False)   # all cached now
        fallbacks = int(df.crop.str.endswith(f'.{CENTRE}.jpg').sum())
        return {'photos': len(df), 'fallbacks': fallbacks, 'fallback_share': fallbacks / max(len(df), 1),
                'device': s.crop.device}

    def train():
        _checked(_mcls('train', 'joint', '--full', '--config', work / 'check.ini', '--export-dir',
                       work / 'models' / 'full',
                       timeout=a.limit))
        import json
        run = max((work / 'runs').glob('*-joint-*/run.json'), key=lambda p: p.stat().st_mtime)
        meta = json.loads(run.read_text())
        return {'train_seconds': meta.get('seconds'),
                **{k: meta.get(k) for k in ('train_images_per_s', 'images_per_s', 'epochs', 'precision', 'world_size')}}

    def predict(engine: str):
        def go():
            if engine == 'onnx':
                from mcls.errors import UserError
                from mcls.onnx_engine import providers
                try:
                    provider = providers()[0]
                except UserError as e:           # a GPU without onnxruntime's CUDA provider: not this machine's step
                    return {'skipped': str(e)}
                _checked(_mcls('export-onnx', work / 'models' / 'full', '--config', work / 'check.ini',
                               timeout=a.limit))
            out = work / f'submission-{engine}.csv'
            t0 = time.perf_counter()
            _checked(_mcls('predict', '--config', work / 'check.ini', '--models', work / 'models' / 'full', '--engine',
                           engine, '--out', out, timeout=a.limit))
            from mcls.evaluate import evaluate_files
            sc = evaluate_files(out, state['data'] / 'eval' / 'answers.csv')
            return {'seconds_predicting': time.perf_counter() - t0, 'f1_18': sc.f1, **sc.task_f1,
                    **({'provider': provider} if engine == 'onnx' else {})}
        return go

    def tests():
        r = subprocess.run([sys.executable, '-m', 'pytest', *shlex.split(a.tests)], cwd=ROOT, capture_output=True,
                           text=True,
                           timeout=a.limit, env={**os.environ, 'HF_HUB_OFFLINE': '1'})
        last = (r.stdout.strip().splitlines() or [''])[-1]
        if r.returncode: raise subprocess.CalledProcessError(r.returncode, r.args, r.stdout, r.stderr)
        return {'summary': last}

    if _step(report, 'import', imports) and _step(report, 'settings', settings):
        if _step(report, 'crop', crop) and _step(report, 'train', train):
            _step(report, 'predict', predict('torch'))
            _step(report, 'predict_onnx', predict('onnx'))
    _step(report, 'tests', tests)
    report.data['ok'] = all(st['ok'] for st in report.data['stages'].values())
    report.save()
    return report.data


if __name__ == '__main__':
    sys.exit(0 if main()['ok'] else 1)      # a scripted device check reads a failed step as a failure
