"""The benchmark suite and studies in their quick forms (tiny data, tiny model): they run and report every field."""
import json
from pathlib import Path

import pytest

from bench import quality
from bench import run as bench_run
from bench.copies import jitter_copy
from bench.studies import persons_oracle, seed_ensemble, workers
from mcls.synth import make_dataset

ROOT = Path(__file__).parents[1]

pytestmark = pytest.mark.bench


def test_bench_reports_every_field(tmp_path):
    make_dataset(tmp_path / 'data', persons=15, eval_persons=3, seed=5)
    out = tmp_path / 'bench.json'
    bench_run.main(['--data', str(tmp_path / 'data'), '--preset', 'tiny', '--out', str(out),
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
    assert all(sp[k] > 0 for k in ('mcls_images_per_s', 'tasks_images_per_s', 'plain_images_per_s',
                                   'ceiling_images_per_s', 'input_images_per_s', 'mcls_over_ceiling',
                                   'tasks_over_ceiling', 'tasks_over_plain', 'tta_over_plain'))
    configs, j = r['ceiling']['configs'], r['joint']
    assert set(configs) == {'fp32', 'fp32 channels_last', 'bf16', 'bf16 channels_last'}
    assert sp['ceiling_config'] == max(configs, key=lambda k: configs[k]['images_per_s'])
    # the default learner trains in rounds between ceiling measurements; the median round's ratio is reported
    assert j['ceilings_images_per_s'][0] == configs[sp['ceiling_config']]['images_per_s'] and j['epochs'] == 2
    assert len(j['rounds_images_per_s']) + 1 == len(j['ceilings_images_per_s']) == len(j['rounds_over_ceiling']) + 1
    rounds = j['rounds_over_ceiling']
    assert sorted(rounds)[len(rounds) // 2] == rounds[j['median_round']]
    assert sp['mcls_images_per_s'] == j['rounds_images_per_s'][j['median_round']]
    assert sp['mcls_over_ceiling'] == pytest.approx(sp['mcls_images_per_s'] / sp['ceiling_images_per_s'])
    assert sp['mcls_over_ceiling'] == pytest.approx(j['rounds_over_ceiling'][j['median_round']])
    assert r['startup']['help_s'] > 0 and r['startup']['help_over_typer'] > 0
    assert r['decode']['seconds_per_photo'] > 0 and sp['decode_share_of_step'] > 0
    assert r['stages']['crop_cold']['cropped'] == r['stages']['crop_cold']['images']
    assert r['stages']['crop_warm']['cropped'] == 0
    assert r['memory']['host_peak_mb'] > 0 and r['wall_s'] > 0
    assert {'predict_eval_plain', 'predict_eval_tta', 'predict_eval_degraded_tta', 'ceiling', 'train_joint',
            'input_pipeline'} <= set(r['stages'])


def test_quality_protocol_quick_form_reports_the_summary(tmp_path):
    from pathlib import Path

    from bench.common import IDENTITY
    if not Path(IDENTITY['predict.identity_weights']).is_file():
        pytest.skip(f"{IDENTITY['predict.identity_weights']} is not here: the protocol groups persons with it")
    out = tmp_path / 'q.json'
    quality.main(['--quick', '--work', str(tmp_path / 'work'), '--seeds', '1', '2', '--oof',
                                 '--full', '--out', str(out)])
    r = json.loads(out.read_text())
    summ = r['summary']
    for key in ('probe_f1_18', 'default_f1_18', 'default_tta_f1_18', 'default_degraded_f1_18', 'persons_f1_18',
                'default_tuned_f1_18', 'valid_tta_f1_18', 'valid_crossfit_tuned_f1_18',
                'jittered_persons_f1_18', 'valid_f1_18', 'eval_persons_purity', 'jittered_persons_completeness',
                'persons_gender_f1', 'jittered_purity', 'jittered_completeness'):
        assert len(summ[key]) == 2 and all(0 <= v <= 1 for v in summ[key]), key
    assert summ['probe_f1_18'] == [r['probe'][r['probe']['floor']]['eval']['f1_18']] * 2
    assert summ['persons_gender_f1'] == [r['seeds'][sd]['eval_persons']['gender'] for sd in ('1', '2')]
    dec = r['persons_decisions']      # fold 0, both seeds pooled, per task: the rule's verdict and its evidence
    assert set(dec['chosen']) <= {'mask', 'gender', 'age'} and {'low', 'high',
                                                                'p_b_better'} <= set(dec['gender']['task_f1'])
    assert all(dec[t]['per_person'] == (t in dec['chosen']) for t in ('mask', 'gender', 'age'))
    assert set(r['probe']) == {'crops', 'photos', 'floor'} and r['mode'] in ('tasks', 'joint')
    assert {'load_and_crop', 'probe', 'train_seed1', 'train_seed2', 'predict_eval_tta_seed2'} <= set(r['stages'])
    assert r['summary_stats']['default_f1_18']['spread'] >= 0 and r['wall_s'] > 0
    for sd in ('1', '2'):      # out of fold: every training photo validated once, by the learner that never saw it
        oof = r['seeds'][sd]['oof']
        assert oof['folds'] == 3 and oof['photos'] == r['rows']['train'] + r['rows']['valid']
        assert {'oof_seed1', 'oof_seed2'} <= set(r['stages']) and len(oof['offsets']['age']) == 3
    for key in ('full_eval_f1_18', 'full_degraded_f1_18', 'full_jittered_f1_18', 'valid_less_f1_18'):
        assert len(summ[key]) == 2 and all(0 <= v <= 1 for v in summ[key]), key
    assert {'full_seed1', 'full_seed2'} <= set(r['stages'])
    assert sum(p.name.endswith('-full') for p in (tmp_path / 'work' / 'runs').iterdir()) == 2   # one per seed
    for key in ('oof_plain_f1_18', 'oof_crossfit_tuned_f1_18', 'oof_eval_tuned_f1_18', 'oof_jittered_tuned_f1_18'):
        assert len(summ[key]) == 2 and all(0 <= v <= 1 for v in summ[key]), key
    again = quality.main(['--quick', '--work', str(tmp_path / 'work'), '--seeds', '1', '--oof', '--full',
                          '--keep', '--no-probe', '--out', str(tmp_path / 'again.json'), '--baseline',
                          str(tmp_path / 'work')])
    dec = again['decision']     # the recipe against itself: a difference of 0, so it does not become a default
    assert dec['metrics']['f1_18']['diff'] == 0 and dec['becomes_default'] is False
    assert dec['units'].startswith('persons')
    assert again['stages']['train_seed1']['seconds'] == 0       # every learner kept: nothing trained again
    for key in ('valid', 'eval', 'eval_tuned', 'jittered_persons', 'oof', 'full_eval', 'valid_less'):
        assert again['seeds']['1'][key] == r['seeds']['1'][key], key
    ens = seed_ensemble.main(['--work', str(tmp_path / 'work'), '--seeds', '1', '2',
                                             '--data', str(tmp_path / 'work' / 'data')])
    for sd in ('1', '2'):      # each seed alone is what the protocol scored; the mean is a third answer
        assert ens['eval'][sd]['f1_18'] == r['seeds'][sd]['eval']['f1_18']
        assert ens['fold0'][sd]['f1_18'] == r['seeds'][sd]['valid']['f1_18']
    assert 0 <= ens['eval']['mean']['f1_18'] <= 1
    ora = persons_oracle.main(['--work', str(tmp_path / 'work'), '--seeds', '1', '2',
                                              '--data', str(tmp_path / 'work' / 'data')])
    for sd in ('1', '2'):      # the product's own answers, recombined as predict --persons auto combines them
        ev, jit = ora['copies']['eval'][sd], ora['copies']['jittered'][sd]
        assert ev['per_photo']['f1_18'] == r['seeds'][sd]['eval']['f1_18']
        assert ev['found_groups']['f1_18'] == r['seeds'][sd]['eval_persons']['f1_18']
        assert jit['found_groups']['f1_18'] == r['seeds'][sd]['jittered_persons']['f1_18']
        assert 0 <= ev['true_persons']['f1_18'] <= 1 and 'found_groups' not in ora['copies']['degraded'][sd]


def test_jittered_copy_moves_every_photo_and_keeps_the_answers(tmp_path):
    import numpy as np
    from PIL import Image
    make_dataset(tmp_path / 'data', persons=2, eval_persons=2, seed=3)
    jitter_copy(tmp_path / 'data', tmp_path / 'jit')
    src, dst = tmp_path / 'data' / 'eval', tmp_path / 'jit' / 'eval'
    assert (src / 'answers.csv').read_text() == (dst / 'answers.csv').read_text()
    assert (tmp_path / 'jit' / 'build_meta.csv').exists()
    names = sorted(p.name for p in (src / 'images').iterdir())
    assert names == sorted(p.name for p in (dst / 'images').iterdir())
    diffs = [np.abs(np.asarray(Image.open(src / 'images' / n).convert('RGB'), float)
                    - np.asarray(Image.open(dst / 'images' / n).convert('RGB'), float)).mean() for n in names]
    assert min(diffs) > 1.0


def test_workers_bench_runs_each_setting(tmp_path):
    make_dataset(tmp_path / 'data', persons=15, eval_persons=2, seed=4)
    out = workers.main(['--data', str(tmp_path / 'data'), '--cache', str(tmp_path / 'crops'),
                                       '--workers', '0', '1', '--rounds', '1', '--weights', '', '--work', str(tmp_path),
                                       '--set', 'train.arch=test_efficientnet', '--set', 'train.size=64',
                                       '--set', 'crop.size=64', '--set', 'train.batch=8', '--set', 'split.folds=3'])
    assert set(out['best_images_per_s']) == {0, 1} and all(v > 0 for v in out['best_images_per_s'].values())
    assert out['photos'] > 0


def test_learning_curve_points_and_collect(tmp_path):
    from bench import curve
    common = ['--quick', '--seed', '1', '--work', str(tmp_path / 'w'), '--cache', str(tmp_path / 'crops')]
    first = curve.main(['point', *common, '--persons', '6', '--no-floor'])
    again = curve.main(['point', *common, '--persons', '6', '--keep'])     # the floor added to a point already trained
    assert first['probe'] is None and again['probe_floor'] is not None and first['default'] == again['default']
    assert again['seconds']['train'] == first['seconds']['train'] > 0
    assert again['seconds']['predict'] == first['seconds']['predict']
    states = first['by_mask_state']
    assert list(states) == ['wear', 'incorrect', 'not_wear'] and states == again['by_mask_state']
    assert states['wear']['photos'] == 5 * states['not_wear']['photos'] > 0          # 5 worn photos a person
    assert all(0 <= v['fallback_share'] <= 1 and 0 <= v['age_f1'] <= 1 for v in states.values())
    curve.main(['point', *common, '--persons', '12'])
    c0 = tmp_path / 'c0.json'
    curve.main(['collect', '--name', 'old', '--work', str(tmp_path / 'w'), '--out', str(c0), '--png',
                str(tmp_path / 'c0.png')])
    screen = tmp_path / 'screen.json'
    screen.write_text(json.dumps({'decisions': [{**dict.fromkeys(curve.DECISION_KEYS, 0), 'row': 'r', 'metrics': {}}]}))
    r = curve.main(['collect', '--name', 'quick', '--work', str(tmp_path / 'w'), '--out', str(tmp_path / 'c.json'),
                    '--png', str(tmp_path / 'c.png'), '--beside', str(c0), '--decisions', str(screen)])
    lc = r['summary']['learning_curve']
    assert lc['persons'] == [6, 12] and all(isinstance(n, int) for n in lc['persons'])
    assert [len(v) for v in lc['default_f1_18']] == [1, 1] and all(0 <= v[0] <= 1 for v in lc['probe_f1_18'])
    assert [p['persons_used'] for p in r['points']] == [6, 12] and (tmp_path / 'c.png').stat().st_size > 0
    assert r['summary']['beside']['learning_curve'] == lc and r['summary']['beside']['file'] == 'c0.json'
    assert [(d['source'], d['row']) for d in r['decisions']] == [('screen.json',
                                                                  'r')] and 'metrics' not in r['decisions'][0]
    # a curve of points without a floor takes the floor at the same sizes from an earlier collection, or says why not
    curve.main(['point', *common, '--persons', '6', '--no-floor', '--work', str(tmp_path / 'new')])
    with pytest.raises(SystemExit, match=r'\(6, 1\)\] have no floor'):
        curve.main(['collect', '--work', str(tmp_path / 'new'), '--out', str(tmp_path / 'n.json'), '--png',
                    str(tmp_path / 'n.png')])
    n = curve.main(['collect', '--work', str(tmp_path / 'new'), '--out', str(tmp_path / 'n.json'), '--png',
                    str(tmp_path / 'n.png'),
                    '--floor-from', str(c0)])
    assert n['summary']['learning_curve']['probe_f1_18'] == [lc['probe_f1_18'][0]]
    assert n['points'][0]['probe_from'] == 'c0.json'


def test_a_screen_judges_a_row_against_the_baseline_by_compare(tmp_path, monkeypatch):
    "A prediction row (the baseline's learners with TTA) against the baseline, both seeds pooled."
    from bench import curve
    common = ['--quick', '--persons', '12', '--no-floor', '--data', str(tmp_path / 'data'), '--cache',
              str(tmp_path / 'crops')]
    base = [curve.main(['point', *common, '--seed', sd, '--work', str(tmp_path / 'base')]) for sd in ('1', '2')]
    for sd in ('1', '2'):
        for row in ('tta', 'offsets'):
            curve.main(['point', *common, '--seed', sd, '--work', str(tmp_path / row), '--models',
                        str(tmp_path / 'base'),
                        f'--{row}'])
    r = curve.main(['screen', str(tmp_path / 'tta'), str(tmp_path / 'offsets'), '--baseline', str(tmp_path / 'base'),
                    '--persons', '12', '--data', str(tmp_path / 'data'), '--draws', '200', '--out',
                    str(tmp_path / 's.json')])
    d, o = r['decisions']
    assert d['row'] == 'tta' and d['seeds'] == [1, 2] and d['tta'] and d['train_seconds'] == [0.0, 0.0]
    tuned = [p for p in r['points'] if p['offsets']]
    assert o['row'] == 'offsets' and len(tuned) == 2 and all(p['seconds']['fold0_train'] > 0 for p in tuned)
    assert all((Path(p['models']) / 'tuning.json').exists() for p in tuned)
    assert not (tmp_path / 'base' / 'p12' / 'models' / 'seed1_full' / 'tuning.json').exists()   # the baseline untouched
    assert d['low'] <= d['diff'] <= d['high'] and d['becomes_default'] == (d['low'] > 0)
    f = d['metrics']['f1_18']
    assert f['a'] == pytest.approx(sum(p['default']['f1_18'] for p in base) / 2) and base[0]['probe'] is None
    assert json.loads((tmp_path / 's.json').read_text())['decisions'][0]['diff'] == d['diff']
    import mcls.compare
    monkeypatch.setattr(mcls.compare, 'compare', None)       # a second screen reuses each row's comparison
    again = curve.main(['screen', str(tmp_path / 'tta'), '--baseline', str(tmp_path / 'base'), '--persons', '12',
                        '--data', str(tmp_path / 'data'), '--draws', '200', '--out', str(tmp_path / 's2.json')])
    assert again['decisions'][0]['low'] == d['low']


def test_stratified_subsets_keep_the_mix_and_nest():
    import numpy as np
    import pandas as pd

    from bench.curve import stratified_persons
    rng = np.random.default_rng(0)
    people = pd.DataFrame({'person': [f'p{i:03d}' for i in range(300)], 'gender': rng.integers(0, 2, 300),
                           'age_group': rng.choice(3, 300, p=[0.5, 0.4, 0.1])})
    small, large = stratified_persons(people, 60, 7), stratified_persons(people, 150, 7)
    assert len(small) == 60 and len(large) == 150 and set(small) <= set(large)
    share = people.set_index('person').loc[small].groupby(['gender', 'age_group']).size() / 60
    assert (abs(share - people.groupby(['gender', 'age_group']).size() / 300) < 0.02).all()


def test_gpu_full_script_runs_on_the_cpu_with_tiny_settings(tmp_path):
    from bench import gpu_full
    r = gpu_full.main(['--quick', '--rows', 'default224', '--work', str(tmp_path / 'w'), '--out',
                       str(tmp_path / 'g.json')])
    row = json.loads((tmp_path / 'g.json').read_text())['rows']['default224']
    import torch
    assert row['train_images_per_s'] > 0 and 0 <= row['eval']['f1_18'] <= 1
    assert r['device'] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')


def test_gpu_scale_script_runs_one_and_two_gloo_ranks_on_the_cpu(tmp_path):
    from bench import gpu_scale
    r = gpu_scale.main(['--quick', '--epochs', '2', '--work', str(tmp_path / 'w'), '--out', str(tmp_path / 's.json')])
    runs = json.loads((tmp_path / 's.json').read_text())['runs']
    assert sorted(runs) == ['1', '2'] and r['gpus'] == 0
    assert [runs[k]['world_size'] for k in ('1', '2')] == [1, 2]
    assert 0 < runs['2']['per_gpu_images_per_s'] < runs['2']['train_images_per_s']     # a share of the job's


def test_gpu_check_runs_every_step_on_the_cpu_with_tiny_settings(tmp_path):
    "each step's figures in the JSON, written as each ends; the tests step runs the pytest arguments it is given"
    from bench import gpu_check
    out = tmp_path / 'c.json'
    r = gpu_check.main(['--quick', '--work', str(tmp_path / 'w'), '--out', str(out), '--tests=-q tests/test_labels.py'])
    st = json.loads(out.read_text())['stages']
    assert list(st) == ['import', 'settings', 'crop', 'train', 'predict', 'predict_onnx', 'tests'] == list(r['stages'])
    assert all(v['ok'] for v in st.values()), {k: v.get('error') for k, v in st.items()}
    assert st['import']['cuda'] is False and st['crop']['photos'] > 0 and 0 <= st['crop']['fallback_share'] <= 1
    assert st['train']['train_images_per_s'] > 0 and 0 <= st['predict']['f1_18'] <= 1
    assert st['predict_onnx']['provider'] == 'CPUExecutionProvider'
    assert abs(st['predict_onnx']['f1_18'] - st['predict']['f1_18']) < 1e-9     # the same submission on the CPU
    assert ' passed' in st['tests']['summary'] and 'failed' not in st['tests']['summary']
    assert r['ok'] is True and json.loads(out.read_text())['ok'] is True


def test_gpu_check_records_a_failed_step_and_goes_on(tmp_path, monkeypatch):
    "a failed crop is recorded with its output; what needs the crops is skipped, the tests still run"
    import subprocess

    from bench import gpu_check
    monkeypatch.setattr(gpu_check, '_mcls', lambda *a, **k: subprocess.CompletedProcess(a, 3, '', 'error: no GPU left'))
    out = tmp_path / 'c.json'
    gpu_check.main(['--quick', '--work', str(tmp_path / 'w'), '--out', str(out), '--tests=-q tests/test_labels.py'])
    st = json.loads(out.read_text())['stages']
    assert list(st) == ['import', 'settings', 'crop', 'tests'] and st['tests']['ok']
    assert not st['crop']['ok'] and st['crop']['error'] == 'exit 3' and 'no GPU left' in st['crop']['output']
    assert json.loads(out.read_text())['ok'] is False


def test_gpu_check_exits_non_zero_when_a_step_failed_and_refuses_an_unwritable_out(tmp_path):
    import subprocess
    import sys
    (tmp_path / 'file').write_text('')
    r = subprocess.run([sys.executable, '-m', 'bench.gpu_check', '--quick', '--out', str(tmp_path / 'file' / 'c.json')],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and 'cannot be written' in r.stderr and 'Traceback' not in r.stderr
    r = subprocess.run([sys.executable, '-m', 'bench.gpu_check', '--quick', '--work', str(tmp_path / 'w'), '--out',
                        str(tmp_path / 'c.json'), '--tests=-q tests/no_such_test_file.py'], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and json.loads((tmp_path / 'c.json').read_text())['stages']['tests']['ok'] is False


def test_framing_counts_centre_crops_by_mask_state_and_what_a_detector_finds(tmp_path, monkeypatch):
    import mcls.crop as C
    from bench import curve
    make_dataset(tmp_path / 'data', persons=4, eval_persons=3, seed=2)
    (tmp_path / 'yunet.onnx').write_bytes(b'faked below')
    monkeypatch.setattr(C, 'fallback_face', lambda im, det: (None, None))       # it finds a face in every photo
    res = curve.main(['framing', '--data', str(tmp_path / 'data'), '--cache', str(tmp_path / 'crops'),
                      '--detector', str(tmp_path / 'yunet.onnx'), '--out', str(tmp_path / 'f.json')])
    st = res['by_mask_state']
    assert [st[k]['photos'] for k in ('wear', 'incorrect', 'not_wear')] == [15, 3, 3]
    assert all(0 <= v['centre_share'] <= 1 and v['centre_with_fallback_share'] == 0 for v in st.values())
    assert json.loads((tmp_path / 'f.json').read_text())['eval_photos'] == 21
