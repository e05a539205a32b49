"""Numeric precision and memory format for training and prediction, chosen by the device: bf16 where the GPU or CPU
computes it natively, fp16 with a gradient scaler on GPUs without bf16 (fastai's MixedPrecision), else fp32."""
from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path

import torch
from fastai.vision.all import Callback, ChannelsLast, MixedPrecision, to_float

from .errors import ConfigError

__all__ = ['BF16_MIN_SIZE', 'AUTOCAST_DTYPES', 'cpu_has_bf16', 'gpu_has_bf16', 'resolve_precision',
           'inference_precision', 'CPUAutocast', 'precision_cbs', 'describe', 'inference_mode']

# lite0 training step on a 2-core AVX512-BF16 CPU, channels_last, batch 32 (docs/benchmarks.md, "Precision"):
# bf16 is slower than fp32 at 128 px and faster at 224 px; it pays off from about 192 px.
BF16_MIN_SIZE = 192
AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}   # the values of [train] precision that autocast


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    "The CPU has native bf16 arithmetic (AVX512-BF16 or AMX); without it bf16 autocast is emulated and slow."
    try:
        flags = Path('/proc/cpuinfo').read_text()
    except OSError:
        return False
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


def gpu_has_bf16() -> bool:
    "The CUDA GPU computes bf16 natively (Ampere and later); T4, V100, P100 and P40 only emulate it."
    return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(precision: str, size: int, cuda: bool | None = None) -> str:
    """auto -> on a CUDA GPU bf16 where it is native, else fp16 (with a gradient scaler); on a CPU bf16 from
    BF16_MIN_SIZE px where the CPU has bf16 units, else fp32. fp16 needs a CUDA GPU (CPU fp16 autocast is slow)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if precision == 'fp16' and not cuda:
        raise ConfigError('[train] precision = fp16 needs a CUDA GPU: use auto (bf16 or fp32 on this CPU) or fp32')
    if precision != 'auto': return precision
    if cuda: return 'bf16' if gpu_has_bf16() else 'fp16'
    return 'bf16' if size >= BF16_MIN_SIZE and cpu_has_bf16() else 'fp32'


def inference_precision(trained: str, size: int, cuda: bool | None = None) -> str:
    """The precision to predict in on this device: a learner trained in fp32 predicts in fp32; one trained in bf16 or
    fp16 (say on a GPU) predicts in what auto resolves to here, so a CPU without bf16 units runs it in fp32."""
    return 'fp32' if trained == 'fp32' else resolve_precision('auto', size, cuda)


def describe(precision: str, channels_last: bool) -> str:
    return f"{precision}{' channels_last' if channels_last else ''}"


class CPUAutocast(Callback):
    "bf16 autocast around the forward pass and loss on CPU; predictions go back to fp32 before loss and metrics."
    order = 10

    def before_batch(self): self.ctx = torch.autocast('cpu', dtype=torch.bfloat16); self.ctx.__enter__()
    def after_pred(self): self.learn.pred = to_float(self.pred)
    def after_loss(self): self.ctx.__exit__(None, None, None)


def precision_cbs(precision: str, channels_last: bool) -> list[Callback]:
    "Callbacks for the fit call (not exported) for a resolved precision."
    cbs: list[Callback] = [ChannelsLast()] if channels_last else []
    if precision == 'fp16': cbs.append(MixedPrecision())                 # fastai's default: fp16 and a GradScaler
    elif precision == 'bf16':
        cbs.append(MixedPrecision(amp_mode='bf16') if torch.cuda.is_available() else CPUAutocast())
    return cbs


@contextlib.contextmanager
def inference_mode(model, trained: str, size: int, channels_last: bool):
    """Prediction in the memory format the model was trained with and the precision `inference_precision` gives for
    this device (`trained`: the precision its training ran in); outputs are cast to fp32 by callers."""
    if channels_last: model.to(memory_format=torch.channels_last)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    dtype = AUTOCAST_DTYPES.get(inference_precision(trained, size))
    with torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        yield
