"""onnxruntime against PyTorch on the protocol's eval photos: images/s of the model's forward pass (fp32, PyTorch
channels_last, the same batches from one DataLoader pass held in memory), rounds alternating between the two, and of
the whole prediction (`ensemble_probs`: reading, resizing and the model) with each engine.

    python -m bench.onnx_speed --models runs/q600/models/seed777 --data data/mf600 --cache data/crops600
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from bench.common import RESULTS
from mcls.atomic import write_text_atomic
from mcls.crop import attach_crops
from mcls.dataset import load_eval
from mcls.export import load_task_learner
from mcls.modeldirs import learners_in
from mcls.onnx_engine import OnnxModel, export_onnx
from mcls.predict import ensemble_probs
from mcls.settings import load_settings


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--models', type=Path, required=True, help='a model folder (copied; the copy gets the .onnx)')
    ap.add_argument('--data', type=Path, required=True)
    ap.add_argument('--cache', type=Path, required=True)
    ap.add_argument('--photos', type=int, default=1024)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--out', type=Path, default=RESULTS / f'onnx-speed-{date.today()}.json')
    a = ap.parse_args(argv)
    s = load_settings(overrides={'paths.data': str(a.data), 'paths.cache': str(a.cache), 'predict.batch': str(a.batch)})
    df, _ = attach_crops(load_eval(a.data).assign(split='eval'), s.crop, s.paths.cache, progress=False)
    df = df.iloc[:a.photos]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / 'models'
        shutil.copytree(a.models, d)
        t0 = time.perf_counter()
        export_onnx(d)
        export_s = time.perf_counter() - t0
        task = learners_in(d)[0]
        learn = load_task_learner(d, task)
        batches = [b[0] for b in learn.dls.test_dl(df[['crop']], bs=a.batch)]   # what both engines are given
        model = learn.model.eval().to(memory_format=torch.channels_last)
        ort = OnnxModel(d, task)

        def torch_pass():
            with torch.inference_mode():
                return [model(x.contiguous(memory_format=torch.channels_last)) for x in batches]

        def ort_pass(): return [ort(x) for x in batches]

        act = learn.loss_func.activation     # logits -> the probabilities predict writes
        pairs = list(zip(torch_pass(), ort_pass()))     # also the warm-up
        diff = max(float((p - q).abs().max()) for p, q in pairs)
        prob_diff = max(float((act(p) - act(q)).abs().max()) for p, q in pairs)
        times = {'torch': [], 'onnxruntime': []}
        for _ in range(a.rounds):
            for name, run in (('torch', torch_pass), ('onnxruntime', ort_pass)):
                t = time.perf_counter(); run(); times[name].append(time.perf_counter() - t)
        n = sum(len(x) for x in batches)
        ips = {k: n / float(np.median(v)) for k, v in times.items()}
        whole = {}
        for engine in ('torch', 'onnx'):     # the whole prediction, photos read and resized each time
            ps = dataclasses.replace(s.predict, engine=engine, batch=a.batch)
            ensemble_probs([d], df.iloc[:a.batch], ps, tta=False)      # warm-up
            t = time.perf_counter(); ensemble_probs([d], df, ps, tta=False)
            whole[engine] = len(df) / (time.perf_counter() - t)
    result = {'models': str(a.models), 'learner': task, 'photos': n, 'batch': a.batch, 'rounds': a.rounds,
              'threads': torch.get_num_threads(), 'export_seconds': round(export_s, 1), 'max_abs_logit_diff': diff,
              'max_abs_prob_diff': prob_diff,
              'forward_images_per_s': ips, 'forward_ratio': ips['onnxruntime'] / ips['torch'],
              'forward_seconds': times, 'predict_images_per_s': whole, 'predict_ratio': whole['onnx'] / whole['torch']}
    write_text_atomic(a.out, json.dumps(result, indent=1))
    print(f"forward pass, {n} photos, batch {a.batch}, {result['threads']} threads: PyTorch fp32 channels_last "
          f"{ips['torch']:.1f} images/s, onnxruntime {ips['onnxruntime']:.1f} images/s: "
          f"{result['forward_ratio']:.2f}x (max |logit diff| {diff:.1e}, |probability diff| {prob_diff:.1e})")
    print(f"whole prediction (read, resize, model): torch {whole['torch']:.1f} images/s, onnx {whole['onnx']:.1f} "
          f"images/s: {result['predict_ratio']:.2f}x; export {export_s:.1f} s; wrote {a.out}")


if __name__ == '__main__':
    main()
