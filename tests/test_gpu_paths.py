"""What a first run on a GPU meets, checked on the CPU where the logic can be reached without one: ranks against
GPUs, face detection failing on the device, workers and threads per rank,
cuDNN's autotuner, and the first-GPU check script in its tiny form."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from mcls.errors import UserError
from tests.conftest import tiny_settings


# --- ranks and GPUs ---

@pytest.mark.parametrize('gpus, ranks, refused', [(1, 2, True), (4, 8, True), (4, 4, False), (2, 1, False)])
def test_more_ranks_than_gpus_is_refused_naming_both_numbers(monkeypatch, gpus, ranks, refused):
    from mcls import distributed
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: gpus)
    if refused:
        with pytest.raises(UserError, match=f'{ranks} ranks on this machine but torch sees {gpus} GPU.*at most {gpus}'):
            distributed.check_gpus(ranks)
    else:
        distributed.check_gpus(ranks)


def test_any_number_of_ranks_on_a_cpu(monkeypatch):
    from mcls import distributed
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    distributed.check_gpus(64)


def test_processes_beyond_the_gpus_are_refused_before_any_work(monkeypatch, tmp_path):
    import sys
    from mcls import cli
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(sys, 'argv', ['mcls', 'train', 'joint', '--processes', '2'])
    with pytest.raises(UserError, match='2 ranks on this machine but torch sees 1 GPU'): cli._join_ranks('train', 2)


# --- face detection failing on the device ---

class FailingGpuDetector:
    "MTCNN on a GPU that runs out of memory on every batch."
    device = torch.device('cuda')

    def __init__(self): self.calls = 0

    def detect(self, images, landmarks=True):
        self.calls += 1
        raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')


def test_detector_error_on_the_gpu_is_detected_again_on_the_cpu_never_cached_as_no_face(synth_root, tmp_path, caplog):
    from mcls.crop import crop_images
    from mcls.dataset import load_train
    files = load_train(synth_root / 'data').file.tolist()[:12]
    s = tiny_settings(synth_root, crop__batch=4)
    plain, _ = crop_images(files, s.crop, tmp_path / 'plain', progress=False)            # the CPU's own answer
    gpu = FailingGpuDetector()
    with caplog.at_level(logging.WARNING):
        got, stats = crop_images(files, s.crop, tmp_path / 'gpu', mtcnn=gpu, progress=False)
    assert gpu.calls == stats.device_retries > 0
    assert 'face detection on cuda failed (OutOfMemoryError' in caplog.text and caplog.text.count('failed') == 1
    for f in files:       # the same kind of crop (face or centre) and the same pixels as the CPU gave
        assert got[f].name.split('.')[1] == plain[f].name.split('.')[1]
        assert np.array_equal(np.asarray(Image.open(got[f])), np.asarray(Image.open(plain[f])))
    assert stats.faces > 0


def test_train_prints_the_centre_crop_fallback_share(synth_root):
    from mcls.cli import _load_summary
    from mcls.dataset import LoadReport
    from mcls.train import training_table
    from rich.console import Console
    report = LoadReport()
    table = training_table(tiny_settings(synth_root), progress=False, report=report)
    centres = int(table.crop.str.endswith('.centre.jpg').sum())
    assert report.crops == len(table) and report.crop_fallbacks == centres
    console = Console(width=200, record=True)
    console.print(_load_summary(report))
    assert f'{centres} ({centres / len(table):.1%})' in console.export_text()


# --- workers, threads, cuDNN ---

@pytest.mark.parametrize('cores, local_ranks, workers', [(16, 1, 16), (16, 2, 8), (16, 8, 0), (32, 1, 16), (2, 1, 0)])
def test_workers_are_a_share_of_the_cores_per_rank(monkeypatch, cores, local_ranks, workers):
    import mcls.threads as T
    from mcls.learner import resolve_workers
    monkeypatch.setattr(T, 'cores', lambda: cores)
    monkeypatch.setenv('LOCAL_WORLD_SIZE', str(local_ranks))
    assert T.rank_cores() == cores // local_ranks
    assert resolve_workers(None) == workers
    assert resolve_workers(3) == 3                   # a number is taken as given


def test_workers_augment_without_an_opencv_thread_pool(synth_root):
    import cv2
    from mcls.learner import task_dls
    from mcls.train import training_table
    s = tiny_settings(synth_root)
    table = training_table(s, progress=False).assign(is_valid=False)
    try:
        cv2.setNumThreads(4)
        task_dls(table, s.tasks['mask'], workers=0)
        assert cv2.getNumThreads() == 4               # augmenting in this process: its pool is left alone
        task_dls(table, s.tasks['mask'], workers=2)
        assert cv2.getNumThreads() == 1               # no pool (0), set before the workers fork and inherit it
    finally:
        cv2.setNumThreads(-1)


@pytest.mark.parametrize('reproducible', [True, False])
def test_cudnn_autotuner_is_on_unless_reproducible(reproducible):
    from mcls.train import seed_run
    seed_run(1, reproducible)
    assert torch.backends.cudnn.benchmark is (not reproducible)
    assert torch.backends.cudnn.deterministic is reproducible
    a = torch.rand(3)
    seed_run(1, reproducible)
    assert torch.equal(a, torch.rand(3))          # seeded either way


def test_reproducible_is_a_setting_and_off_by_default(tmp_path):
    from mcls.settings import load_settings
    assert load_settings(cwd=tmp_path).tasks['joint'].reproducible is False
    assert load_settings(overrides={'train.reproducible': 'true'}, cwd=tmp_path).tasks['age'].reproducible is True
