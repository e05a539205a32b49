import dataclasses

import numpy as np
import pytest
import torch

from mcls.learner import ConfigError, check_task_settings, make_loss, make_model, norm_stats
from mcls.settings import load_settings
from mcls.train import training_table
from tests.conftest import tiny_settings


@pytest.fixture
def age(tmp_path):
    return load_settings(overrides={'train.arch': 'test_efficientnet', 'train.pretrained': 'false'},
                         cwd=tmp_path).tasks['age']


def hand_focal(logits, targets, gamma, weight=None):
    "FL = mean_i (1 - p_t)^gamma * CE_i, with CE_i = -w[t_i] log softmax(x_i)[t_i] and p_t = exp(-CE_i)."
    out = []
    for x, t in zip(logits.tolist(), targets.tolist()):
        e = np.exp(np.array(x) - max(x))
        ce = -np.log(e[t] / e.sum()) * (1.0 if weight is None else weight[t])
        out.append((1 - np.exp(-ce)) ** gamma * ce)
    return float(np.mean(out))


@pytest.mark.parametrize('gamma', [0.0, 1.0, 2.0, 3.5])
@pytest.mark.parametrize('weights', [None, (1.0, 2.0, 4.0)])
def test_focal_loss_matches_hand_computation(age, gamma, weights):
    ts = dataclasses.replace(age, gamma=gamma, class_weights=weights)
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(16, 3, generator=g) * 3, torch.randint(0, 3, (16,), generator=g)
    got = make_loss(ts)(logits, targets).item()
    assert got == pytest.approx(hand_focal(logits, targets, gamma, weights), rel=1e-5)


def test_focal_gamma_zero_is_cross_entropy(age):
    logits, targets = torch.randn(8, 3), torch.randint(0, 3, (8,))
    ce = torch.nn.functional.cross_entropy(logits, targets).item()
    assert make_loss(dataclasses.replace(age, gamma=0.0))(logits, targets).item() == pytest.approx(ce, rel=1e-6)


def test_ce_with_label_smoothing(age):
    ts = dataclasses.replace(age, loss='ce', label_smoothing=0.1)
    logits, targets = torch.randn(8, 3), torch.randint(0, 3, (8,))
    want = torch.nn.functional.cross_entropy(logits, targets, label_smoothing=0.1).item()
    assert make_loss(ts)(logits, targets).item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize('change,match', [
    ({'arch': 'efficientnet_b99'}, 'not a timm model'),
    ({'pipeline': 'sparkles'}, 'unknown pipeline'),
    ({'lr': 0.0}, 'must be > 0'),
    ({'lr': -1e-4}, 'must be > 0'),
    ({'loss': 'hinge'}, 'one of ce, focal'),
    ({'class_weights': (1.0, 2.0)}, 'needs 3 values'),
    ({'weights': __import__('pathlib').Path('/nowhere/w.safetensors')}, 'file not found.*--no-pretrained'),
])
def test_bad_settings_fail_before_training(age, change, match):
    with pytest.raises(ConfigError, match=match): check_task_settings(dataclasses.replace(age, **change))


def test_offline_pretrained_fails_at_once_naming_the_fixes(age, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HUB_CACHE', '/nonexistent-cache')
    ts = dataclasses.replace(age, arch='resnet18', pretrained=True)
    import socket
    tried = []                  # 'at once': offline, the hub is not even tried (timm would retry for ~50 s)
    monkeypatch.setattr(socket, 'create_connection', lambda *a, **k: tried.append(a) or (_ for _ in ()).throw(OSError))
    with pytest.raises(ConfigError, match='--weights.*--no-pretrained'): check_task_settings(ts)
    assert tried == []


def test_local_weights_file_is_loaded(age, tmp_path):
    import timm
    from safetensors.torch import save_file
    ref = timm.create_model('test_efficientnet', num_classes=0)
    f = tmp_path / 'w.safetensors'
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(f))
    model = make_model(dataclasses.replace(age, pretrained=True, weights=f))
    body = model[0].model
    assert all(torch.equal(body.state_dict()[k], v) for k, v in ref.state_dict().items())


def test_norm_stats_come_from_timm():
    assert norm_stats('tf_efficientnet_lite0') == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert norm_stats('efficientnet_b3')[0] == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.parametrize('workers,cores,expected', [(None, 1, 0), (None, 2, 0), (None, 4, 4), (None, 64, 16),
                                                    (3, 2, 3), (0, 16, 0)])
def test_auto_workers_by_cores(workers, cores, expected):
    from mcls.learner import resolve_workers
    assert resolve_workers(workers, cores) == expected


def test_settings_a_year_head_does_not_use_are_said(tmp_path, caplog):
    from mcls.learner import check_task_settings
    from mcls.settings import load_settings
    ov = {'joint.age_head': 'dist', 'joint.class_weights': '1,2,3', 'train.pretrained': 'false'}
    ts = load_settings(overrides=ov, cwd=tmp_path).tasks['joint']
    check_task_settings(ts)
    assert 'age_head = dist learns years' in caplog.text and 'class_weights' in caplog.text and 'focal' in caplog.text
    caplog.clear()
    check_task_settings(load_settings(overrides={'train.pretrained': 'false'}, cwd=tmp_path).tasks['joint'])
    assert 'learns years' not in caplog.text


@pytest.mark.parametrize('make', ['garbage', 'other_arch'])
def test_bad_weights_are_refused_before_any_work(tmp_path, make):
    import timm
    from safetensors.torch import save_file

    from mcls.learner import check_task_settings
    w = tmp_path / 'w.safetensors'
    if make == 'garbage': w.write_bytes(b'\x00' * 64)
    else: save_file(timm.create_model('test_vit').state_dict(), str(w))
    s = tiny_settings(tmp_path, train__pretrained='true', train__weights=str(w))
    with pytest.raises(ConfigError, match='not ImageNet weights for test_efficientnet'):
        check_task_settings(s.tasks['mask'])


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

