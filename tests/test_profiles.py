"""The GPU profile: it loads, changes what a GPU changes, follows the batch-to-rate rule from the CPU recipe, and a
training on a GPU with the CPU recipe names it."""
from pathlib import Path

import pytest

from mcls.settings import GPU_PROFILE, LEARNERS, cpu_recipe_on_gpu, load_settings

ROOT = Path(__file__).parents[1]


@pytest.fixture
def settings(tmp_path):
    return load_settings(cwd=tmp_path), load_settings(ROOT / GPU_PROFILE, cwd=tmp_path)


def test_the_gpu_profile_is_the_design_backbone_at_224_px_on_auto_precision(settings):
    cpu, gpu = settings
    for t in LEARNERS:
        ts = gpu.tasks[t]
        assert (ts.arch, ts.size, ts.pretrained, ts.precision, ts.workers) == ('efficientnet_b3', 224, True, 'auto',
                                                                               None)
        assert ts.batch > cpu.tasks[t].batch


@pytest.mark.parametrize('learner', LEARNERS)
def test_the_gpu_profile_rates_follow_the_linear_rule_from_the_cpu_recipe(settings, learner):
    cpu, gpu = settings
    c, g = cpu.tasks[learner], gpu.tasks[learner]
    assert g.lr == pytest.approx(c.lr * g.batch / c.batch)


def test_what_the_gpu_profile_carries_over(settings):
    cpu, gpu = settings
    for t in LEARNERS:
        for key in ('epochs', 'full_epochs', 'photos_per_person', 'pipeline', 'loss', 'old_weight', 'early_sizes'):
            assert getattr(gpu.tasks[t], key) == getattr(cpu.tasks[t], key), (t, key)


def test_a_gpu_with_the_cpu_recipe_gets_one_line_naming_the_profile(settings, tmp_path):
    cpu, gpu = settings
    line = cpu_recipe_on_gpu(cpu, ['joint'], cuda=True)
    assert GPU_PROFILE in line and '\n' not in line and '128 px' in line
    assert cpu_recipe_on_gpu(cpu, ['joint'], cuda=False) is None
    assert cpu_recipe_on_gpu(gpu, ['joint'], cuda=True) is None
    assert cpu_recipe_on_gpu(load_settings(overrides={'train.size': '192'}, cwd=tmp_path), ['joint'], cuda=True) is None
