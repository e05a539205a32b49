"""ONNX: each learner of a model folder as `<task>.onnx` (`mcls export-onnx`), and onnxruntime in place of PyTorch's
forward pass (`mcls predict --engine onnx`). The graph takes what the learner's model takes: RGB, NCHW, float32,
`size` x `size`, scaled to 0-1 and normalised with the recorded mean and std; it returns the model's logits.
Those facts are in the graph's metadata and in `<task>.json` beside it."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import atomic_path
from .errors import DataError, UserError
from .export import load_task_learner, read_meta
from .modeldirs import check_model_dir

__all__ = ['OPSET', 'onnx_path', 'export_onnx', 'weights_sha1', 'graph_sha1', 'load_checked', 'providers', 'OnnxModel']

OPSET = 18


def onnx_path(model_dir: Path, task: str) -> Path: return Path(model_dir) / f'{task}.onnx'


def weights_sha1(model_dir: Path, task: str) -> str:
    "The learner's weights file digest: an ONNX graph records it, so a retrained learner's stale graph is refused."
    h = hashlib.sha1()
    with open(Path(model_dir) / f'{task}.safetensors', 'rb') as fh:
        for block in iter(lambda: fh.read(1 << 20), b''): h.update(block)
    return h.hexdigest()


def export_onnx(model_dir: Path) -> list[Path]:
    "Write `<task>.onnx` beside each learner of `model_dir` (fp32, batch size free), each whole or not at all."
    import onnx
    model_dir = Path(model_dir)
    written = []
    for task in check_model_dir(model_dir):
        meta = read_meta(model_dir, task)
        model = load_task_learner(model_dir, task).model.eval().float().cpu()
        dummy = torch.zeros(2, 3, meta['size'], meta['size'])
        dest = onnx_path(model_dir, task)
        props = {'mcls_task': task, 'arch': meta['arch'], 'size': str(meta['size']),
                 'mean': ','.join(map(str, meta['norm'][0])), 'std': ','.join(map(str, meta['norm'][1])),
                 'input': 'RGB NCHW float32, 0-1 then (x - mean) / std', 'output': 'logits',
                 'weights_sha1': weights_sha1(model_dir, task)}
        with atomic_path(dest) as tmp:
            torch.onnx.export(model, (dummy,), str(tmp), dynamo=True, opset_version=OPSET, input_names=['image'],
                              output_names=['logits'], dynamic_shapes=({0: torch.export.Dim('batch')},),
                              external_data=False, verbose=False)
            graph = onnx.load(str(tmp))
            onnx.helper.set_model_props(graph, {**props, 'graph_sha1': graph_sha1(graph)})
            onnx.save(graph, str(tmp))
        written.append(dest)
    return written


def graph_sha1(model) -> str:
    """Digest of an ONNX model's graph (nodes and weights; the metadata that records it aside): a changed byte
    changes it."""
    return hashlib.sha1(model.graph.SerializeToString(deterministic=True)).hexdigest()


def load_checked(model_dir: Path, task: str):
    """`<task>.onnx` of `model_dir`, refused unless it is whole (it parses and passes the ONNX checker), unchanged
    since export (its graph digest) and made from the folder's weights (their digest)."""
    import onnx
    path = onnx_path(model_dir, task)
    again = f'run `mcls export-onnx {model_dir}` (or predict with --engine torch)'
    if not path.exists(): raise DataError(f'{path}: missing; {again}')
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:      # noqa: BLE001 - protobuf's DecodeError, the checker's errors: a damaged file
        why = str(e).splitlines()[0][:100] if str(e) else 'cut off'
        raise DataError(f'{path}: not a whole ONNX graph ({type(e).__name__}: {why}); {again}') from None
    props = {p.key: p.value for p in model.metadata_props}
    if props.get('graph_sha1') != graph_sha1(model):
        raise DataError(f'{path}: changed since `mcls export-onnx` wrote it (its graph digest differs, or it was '
                        f'written by an older mcls); {again}')
    if props.get('weights_sha1') != weights_sha1(model_dir, task):
        raise DataError(f'{path}: made from other weights than {task}.safetensors (the learner was trained again); '
                        f'{again}')
    return model


def providers() -> list[str]:
    """onnxruntime's execution providers, the one that runs first: CUDA where torch sees a GPU, else the CPU. A GPU
    machine whose onnxruntime lacks the CUDA provider (PyPI's onnxruntime is CPU-only) is refused rather than left
    to run on the CPU in silence."""
    import onnxruntime as ort
    if not torch.cuda.is_available(): return ['CPUExecutionProvider']
    have = ort.get_available_providers()
    if 'CUDAExecutionProvider' not in have:
        raise UserError(f'--engine onnx on a GPU machine, but this onnxruntime has no CUDA provider (it has '
                        f'{", ".join(have)}): install onnxruntime-gpu (`pip install .[gpu]`), predict with --engine '
                        f'torch, or hide the GPU (CUDA_VISIBLE_DEVICES=) to run onnx on the CPU')
    return ['CUDAExecutionProvider', 'CPUExecutionProvider']


class OnnxModel(nn.Module):
    """An onnxruntime session behind the nn.Module interface: a fastai Learner predicts with it (get_preds, tta)
    as with its PyTorch model. Refuses a graph missing or made from other weights than the folder's."""
    def __init__(self, model_dir: Path, task: str):
        super().__init__()
        import onnxruntime as ort
        model = load_checked(model_dir, task)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()     # [train] threads, as PyTorch's
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=providers())
        self.input = self.session.get_inputs()[0].name
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)   # fastai reads the device off a parameter

    def forward(self, x):
        out = self.session.run(None, {self.input: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)
