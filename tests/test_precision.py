"""The precision a training and a prediction run in, chosen by the device: every branch reached on a CPU machine by
faking the device's capabilities."""
import json
import shutil

import numpy as np
import pytest
import torch
from fastai.vision.all import MixedPrecision

import mcls.precision as P
from mcls.errors import ConfigError


@pytest.fixture
def device(monkeypatch):
    "Fake a device: `device(cuda=..., gpu_bf16=..., cpu_bf16=...)`."
    def fake(cuda=False, gpu_bf16=False, cpu_bf16=False):
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
        monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: gpu_bf16)
        monkeypatch.setattr(P, 'cpu_has_bf16', lambda: cpu_bf16)
    return fake


@pytest.mark.parametrize('cuda, gpu_bf16, cpu_bf16, size, want', [
    (True, True, False, 128, 'bf16'),      # A100, H100, RTX 30xx and later: native bf16
    (True, False, False, 224, 'fp16'),     # T4, V100, P100, P40: bf16 only emulated, so fp16 with a gradient scaler
    (False, False, True, 224, 'bf16'),     # a CPU with AVX512-BF16 / AMX, at a size where bf16 pays
    (False, False, True, 128, 'fp32'),     # ... below it
    (False, False, False, 224, 'fp32'),    # a CPU without bf16 units
])
def test_auto_picks_the_precision_the_device_computes_natively(device, cuda, gpu_bf16, cpu_bf16, size, want):
    device(cuda, gpu_bf16, cpu_bf16)
    assert P.resolve_precision('auto', size) == want


def test_native_bf16_is_asked_without_emulation(monkeypatch):
    "torch's default counts emulated bf16 as supported (True on a P40): mcls must ask for native support"
    asked = []
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: asked.append(
        including_emulation) or including_emulation)
    assert P.gpu_has_bf16() is False and asked == [False]


@pytest.mark.parametrize('value', ['fp32', 'bf16', 'fp16'])
def test_an_explicit_precision_is_kept_on_a_gpu(device, value):
    device(cuda=True, gpu_bf16=False)
    assert P.resolve_precision(value, 128) == value


def test_fp16_without_a_gpu_is_one_line_before_training(device):
    from mcls.learner import check_task_settings
    from mcls.settings import load_settings
    device(cuda=False)
    with pytest.raises(ConfigError, match='fp16 needs a CUDA GPU'):
        P.resolve_precision('fp16', 128)
    ts = load_settings(overrides={'train.precision': 'fp16', 'train.pretrained': 'false'}).tasks['joint']
    with pytest.raises(ConfigError, match='fp16 needs a CUDA GPU'):
        check_task_settings(ts)


@pytest.mark.parametrize('precision, cuda, scaler, amp_dtype', [
    ('fp16', True, True, torch.float16),       # fastai's MixedPrecision with its GradScaler
    ('bf16', True, False, torch.bfloat16),     # bf16 needs no scaler
])
def test_gpu_precisions_use_fastai_mixed_precision(device, precision, cuda, scaler, amp_dtype):
    device(cuda=cuda, gpu_bf16=precision == 'bf16')
    (mp,) = [cb for cb in P.precision_cbs(precision, channels_last=False) if isinstance(cb, MixedPrecision)]
    assert mp.amp_mode.value == {torch.float16: 'fp16', torch.bfloat16: 'bf16'}[amp_dtype]
    assert (mp.amp_mode.value == 'fp16') is scaler


def test_cpu_bf16_autocasts_and_fp32_adds_nothing(device):
    device(cuda=False, cpu_bf16=True)
    assert [type(cb) for cb in P.precision_cbs('bf16', channels_last=False)] == [P.CPUAutocast]
    assert P.precision_cbs('fp32', channels_last=False) == []


@pytest.mark.parametrize('trained, cuda, gpu_bf16, cpu_bf16, size, want', [
    ('bf16', False, False, False, 224, 'fp32'),   # trained on a GPU, predicted on a CPU without bf16 units
    ('bf16', False, False, True, 128, 'fp32'),    # a bf16 CPU, but below the size where bf16 pays there
    ('bf16', False, False, True, 224, 'bf16'),
    ('bf16', True, True, False, 128, 'bf16'),     # on a GPU with native bf16
    ('bf16', True, False, False, 128, 'fp16'),    # a bf16 learner on a T4: what that card computes
    ('fp16', True, True, False, 128, 'bf16'),     # an fp16 learner on an H100
    ('fp16', False, False, False, 224, 'fp32'),   # ... and on a CPU
    ('fp32', True, True, True, 224, 'fp32'),      # an fp32 learner stays fp32
])
def test_prediction_runs_in_the_precision_of_its_device(device, trained, cuda, gpu_bf16, cpu_bf16, size, want):
    device(cuda, gpu_bf16, cpu_bf16)
    assert P.inference_precision(trained, size) == want


def test_inference_autocasts_to_the_dtype_of_its_precision(device, monkeypatch):
    device(cuda=False, cpu_bf16=True)
    model = torch.nn.Linear(4, 2)
    with P.inference_mode(model, 'bf16', 224, channels_last=False):
        assert model(torch.rand(1, 4)).dtype == torch.bfloat16
    with P.inference_mode(model, 'fp32', 224, channels_last=False):
        assert model(torch.rand(1, 4)).dtype == torch.float32


def test_a_gpu_trained_export_predicts_as_fp32_on_this_cpu(trained, tmp_path, device):
    "the export's json says bf16 or fp16 (trained on a GPU); on a CPU without bf16 the probabilities are fp32's"
    from mcls.predict import predict_eval
    device(cuda=False, cpu_bf16=False)
    s = trained['settings']
    predict_eval(s, [trained['models']], tmp_path / 'fp32.csv', tta=False, progress=False)
    a = np.load(tmp_path / 'fp32.csv.probs.npz')
    for precision in ('bf16', 'fp16'):
        d = tmp_path / precision
        shutil.copytree(trained['models'], d)
        for t in ('mask', 'gender', 'age'):
            meta = json.loads((d / f'{t}.json').read_text())
            (d / f'{t}.json').write_text(json.dumps({**meta, 'precision': precision}))
        predict_eval(s, [d], tmp_path / f'{precision}.csv', tta=False, progress=False)
        b = np.load(tmp_path / f'{precision}.csv.probs.npz')
        for t in ('mask', 'gender', 'age'): assert np.array_equal(a[t], b[t])
        assert json.loads((d / 'age.json').read_text())['precision'] == precision      # the training's, still recorded
