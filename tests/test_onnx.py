"""ONNX export and onnxruntime prediction (`mcls export-onnx`, `mcls predict --engine onnx`) on tiny learners."""
import dataclasses
import shutil

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import load_file, save_file

from mcls.errors import DataError, UserError
from mcls.onnx_engine import OnnxModel, export_onnx, onnx_path, providers
from mcls.predict import predict_eval
from tests.conftest import needs_onnx_provider


@pytest.fixture(scope='module')
def onnx_models(trained, tmp_path_factory):
    "A copy of the trained fold-0 folder with its three learners exported as ONNX."
    d = tmp_path_factory.mktemp('onnx') / 'fold0'
    shutil.copytree(trained['models'], d)
    return d, export_onnx(d)


def with_engine(s, engine, **kw):
    return dataclasses.replace(s, predict=dataclasses.replace(s.predict, engine=engine, **kw))


def test_every_learner_gets_a_graph_with_its_input_recorded(onnx_models):
    d, written = onnx_models
    assert sorted(p.name for p in written) == ['age.onnx', 'gender.onnx', 'mask.onnx']
    props = {p.key: p.value for p in onnx.load(str(onnx_path(d, 'age'))).metadata_props}
    assert props['size'] == '64' and props['mean'] == '0.485,0.456,0.406' and props['std'] == '0.229,0.224,0.225'
    assert not list(d.glob('.*.tmp'))


@needs_onnx_provider
@pytest.mark.parametrize('tta', [False, True])
def test_onnxruntime_writes_the_pytorch_submission(onnx_models, trained, tmp_path, tta):
    "byte for byte on the CPU; on a GPU cuDNN's and onnxruntime's kernels round differently, so within 1e-3"
    d, _ = onnx_models
    s = trained['settings']
    subs = {e: predict_eval(with_engine(s, e), [d], tmp_path / f'{e}.csv', tta=tta, progress=False) for e in ('torch',
                                                                                                              'onnx')}
    if not torch.cuda.is_available():
        assert (tmp_path / 'torch.csv').read_bytes() == (tmp_path / 'onnx.csv').read_bytes()
    assert len(subs['onnx']) > 0
    a, b = np.load(tmp_path / 'torch.csv.probs.npz'), np.load(tmp_path / 'onnx.csv.probs.npz')
    for t in ('mask', 'gender', 'age'): np.testing.assert_allclose(a[t], b[t],
                                                                   atol=1e-4 if not torch.cuda.is_available() else 1e-3)


def test_a_gpu_without_the_onnx_cuda_provider_is_refused_and_the_provider_named(monkeypatch):
    import onnxruntime as ort
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert providers() == ['CPUExecutionProvider']
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(ort, 'get_available_providers', lambda: ['AzureExecutionProvider', 'CPUExecutionProvider'])
    with pytest.raises(UserError, match=r'no CUDA provider .*pip install \.\[gpu\]'): providers()
    monkeypatch.setattr(ort, 'get_available_providers', lambda: ['CUDAExecutionProvider', 'CPUExecutionProvider'])
    assert providers()[0] == 'CUDAExecutionProvider'


@needs_onnx_provider
def test_a_missing_or_stale_graph_is_refused_naming_the_fix(onnx_models, tmp_path):
    d = tmp_path / 'fold0'
    shutil.copytree(onnx_models[0], d)
    weights = load_file(str(d / 'mask.safetensors'))
    first = next(iter(weights))
    weights[first] = weights[first] + 1          # the learner trained again, its graph not exported again
    save_file(weights, str(d / 'mask.safetensors'))
    with pytest.raises(DataError, match='export-onnx'):
        OnnxModel(d, 'mask')
    onnx_path(d, 'gender').unlink()
    with pytest.raises(DataError, match=r'gender\.onnx: missing.*export-onnx'):
        OnnxModel(d, 'gender')


@needs_onnx_provider
def test_a_truncated_graph_is_refused_naming_the_fix(onnx_folder, tmp_path):
    import shutil

    from mcls.onnx_engine import OnnxModel, onnx_path
    d = tmp_path / 'fold0'
    shutil.copytree(onnx_folder, d)
    data = onnx_path(d, 'mask').read_bytes()
    onnx_path(d, 'mask').write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=r'mask\.onnx: not a whole ONNX graph.*export-onnx'): OnnxModel(d, 'mask')
    onnx_path(d, 'age').write_bytes(b'')
    with pytest.raises(DataError, match=r'age\.onnx: not a whole ONNX graph'): OnnxModel(d, 'age')


@needs_onnx_provider
def test_a_graph_with_altered_weights_is_refused(onnx_folder, tmp_path):
    import shutil

    import onnx
    from onnx import numpy_helper

    from mcls.onnx_engine import OnnxModel, onnx_path
    d = tmp_path / 'fold0'
    shutil.copytree(onnx_folder, d)
    OnnxModel(d, 'gender')                              # intact: taken
    m = onnx.load(str(onnx_path(d, 'gender')))
    init = max(m.graph.initializer, key=lambda t: np.prod(t.dims))
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 0.5                                    # one weight changed, the metadata left as it was
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(m, str(onnx_path(d, 'gender')))
    with pytest.raises(DataError, match=r'gender\.onnx: changed since `mcls export-onnx` wrote it'): OnnxModel(d,
                                                                                                               'gender')

