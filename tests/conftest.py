import os

# tests never reach the hub (timm would retry for ~50 s) and never ask albumentations for updates
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from mcls.demo import tiny_overrides  # noqa: E402
from mcls.settings import LEARNERS, load_settings  # noqa: E402
from mcls.synth import make_dataset  # noqa: E402

# Tiers (pytest -m fast for the edit-test loop; the README's command runs them all). A test's tier is its own marker,
# else `train` when it uses a synthetic data set, else `fast`; each tier has a per-test time limit.
TIERS = {'fast': 30, 'train': 300, 'cli': 300, 'bench': 900, 'notebooks': 600}
DATA_FIXTURES = {'trained', 'synth_root', 'joint_run'}     # fixtures that train or draw a data set


def pytest_configure(config):
    for tier, limit in TIERS.items():
        config.addinivalue_line('markers', f'{tier}: tier of tests (each limited to {limit} s)')


def pytest_collection_modifyitems(items):
    for item in items:
        tier = next((m.name for m in item.iter_markers() if m.name in TIERS), None)
        if tier is None:
            tier = 'train' if DATA_FIXTURES & set(item.fixturenames) else 'fast'
            item.add_marker(getattr(pytest.mark, tier))
        if item.get_closest_marker('timeout') is None: item.add_marker(pytest.mark.timeout(TIERS[tier]))


def _onnx_runs_here() -> bool:
    "Whether --engine onnx can run here: a GPU machine whose onnxruntime has no CUDA provider refuses it."
    from mcls.errors import UserError
    from mcls.onnx_engine import providers
    try:
        providers()
    except UserError:
        return False
    return True


needs_onnx_provider = pytest.mark.skipif(not _onnx_runs_here(), reason='torch sees a GPU and this onnxruntime has no '
                                         'CUDA provider: --engine onnx is refused here (tests/test_onnx.py checks it)')


def tiny_settings(root: Path, **extra):
    """Settings for a tiny randomly initialised model on a synthetic data set under `root`: one epoch, one-cycle,
    no workers, 3 folds; `extra` as section__key=value."""
    # fp32 on every device: tests compare engines, processes and devices to the byte (bf16 is tested on its own)
    ov = {'train.workers': 0, 'split.folds': 3, 'train.precision': 'fp32',
          **{f'{t}.fit': 'one_cycle' for t in LEARNERS},
          **{k.replace('__', '.'): v for k, v in extra.items()}}
    return load_settings(overrides=tiny_overrides(root, 1, **ov))


def kill_after_first_epoch(monkeypatch, table, s, task: str, fold):
    "Train `task` until epoch 0 has ended and been saved, then stop it as a kill would (KeyboardInterrupt)."
    from fastai.vision.all import Callback

    import mcls.train as T

    class KillAfterFirstEpoch(Callback):
        order = 99    # after every saver
        def after_epoch(self): raise KeyboardInterrupt

    real = T._fit_cbs
    monkeypatch.setattr(T, '_fit_cbs', lambda *a: [*real(*a), KillAfterFirstEpoch()])
    with pytest.raises(KeyboardInterrupt): T.train_task(table, s, task, fold, progress=False)
    monkeypatch.setattr(T, '_fit_cbs', real)


@pytest.fixture
def synth_root(tmp_path):
    make_dataset(tmp_path / 'data', persons=15, eval_persons=3, seed=1)
    return tmp_path


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
    "Three tasks trained one epoch on fold 0 of a small synthetic set, exported to models/fold0."
    from mcls.train import train_task, training_table
    root = tmp_path_factory.mktemp('trained')
    make_dataset(root / 'data', persons=24, eval_persons=4, seed=2)
    s = tiny_settings(root)
    table = training_table(s, progress=False)
    results = {t: train_task(table, s, t, 0, export_dir=root / 'models' / 'fold0', progress=False)
               for t in ('mask', 'age', 'gender')}
    return {'root': root, 'settings': s, 'table': table, 'results': results, 'models': root / 'models' / 'fold0'}


@pytest.fixture(scope='module')
def tiny_ranks(tmp_path_factory):
    from mcls.demo import tiny_overrides
    from mcls.settings import LEARNERS, load_settings
    from mcls.synth import make_dataset
    root = tmp_path_factory.mktemp('launch')
    make_dataset(root / 'data', persons=15, eval_persons=3, seed=1)
    ov = tiny_overrides(root, 30, **{'train.workers': 0, 'split.folds': 3,
                                     **{f'{t}.fit': 'one_cycle' for t in LEARNERS}})
    (root / 'tiny.ini').write_text(load_settings(overrides=ov).to_ini())
    return root


@pytest.fixture(scope='module')
def onnx_folder(trained, tmp_path_factory):
    import shutil

    from mcls.onnx_engine import export_onnx
    d = tmp_path_factory.mktemp('onnx3') / 'fold0'
    shutil.copytree(trained['models'], d)
    export_onnx(d)
    return d

