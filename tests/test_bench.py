import importlib.util
import json
from pathlib import Path

from mcls.synth import make_dataset

ROOT = Path(__file__).parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location('bench_run', ROOT / 'bench' / 'run.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_reports_every_field(tmp_path):
    make_dataset(tmp_path / 'data', persons=15, eval_persons=3, seed=5)
    out = tmp_path / 'bench.json'
    load_bench().main(['--data', str(tmp_path / 'data'), '--preset', 'tiny', '--out', str(out),
                       '--work', str(tmp_path / 'work'), '--workers', '0', '--seeds', '1', '2'])
    r = json.loads(out.read_text())
    for task in ('mask', 'age', 'gender'):
        t = r['tasks'][task]
        assert 0 <= t['valid_f1'] <= 1 and len(t['valid_f1_seeds']) == 2 and t['valid_f1_spread'] >= 0
        assert t['train_images_per_s'] > 0 and t['first_epoch_s'] > 0 and len(t['valid_f1_per_epoch']) == 1
        assert all(0 <= f <= 1 for f in t['plain']['valid_f1']) and t['plain']['warm_images_per_s'] > 0
    for key in ('eval', 'eval_degraded'):
        for mode in ('plain', 'tta'):
            e = r[key][mode]
            assert 0 <= e['f1'] <= 1 and 0 <= e['accuracy'] <= 1
            assert set(e['task_f1']) == {'mask', 'gender', 'age'} and all(0 <= v <= 1 for v in e['task_f1'].values())
    sp = r['speed']
    assert all(sp[k] > 0 for k in ('mcls_images_per_s', 'plain_images_per_s', 'ceiling_images_per_s',
                                   'input_images_per_s', 'mcls_over_ceiling', 'mcls_over_plain'))
    assert r['stages']['crop_cold']['cropped'] == r['stages']['crop_cold']['images']
    assert r['stages']['crop_warm']['cropped'] == 0
    assert r['memory']['host_peak_mb'] > 0 and r['wall_s'] > 0
    assert {'predict_eval_plain', 'predict_eval_tta', 'predict_eval_degraded_tta', 'ceiling',
            'input_pipeline'} <= set(r['stages'])
