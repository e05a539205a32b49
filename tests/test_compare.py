"""`mcls compare`: a paired bootstrap over persons on made-up predictions whose answer is known."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mcls.compare import Predictions, compare, read_side
from mcls.errors import DataError
from mcls.evaluate import score
from mcls.labels import LABEL_TASKS, N_CLASSES, decode
from mcls.submission import write_submission
from tests.helpers import _cli, _persons_case, _submission, _valid_folder, one_line_error

ROOT = Path(__file__).resolve().parents[1]
PERSONS, PHOTOS = 200, 7


def made_up(seed=0, error_rate=0.4):
    "Truth for PERSONS x PHOTOS photos (gender and age per person) and decisions wrong on `error_rate` of them."
    rng = np.random.default_rng(seed)
    g, a = rng.integers(0, 2, PERSONS).repeat(PHOTOS), rng.integers(0, 3, PERSONS).repeat(PHOTOS)
    m = np.tile([0, 0, 0, 0, 0, 1, 2], PERSONS)
    truth = m * 6 + g * 3 + a
    pred = truth.copy()
    wrong = rng.random(len(truth)) < error_rate
    pred[wrong] = (truth[wrong] + rng.integers(1, N_CLASSES, wrong.sum())) % N_CLASSES
    ids = np.array([f'{i:05d}.jpg' for i in range(len(truth))])
    persons = np.array([f'p{i // PHOTOS}' for i in range(len(truth))])
    return ids, persons, truth, pred


def fix_errors(truth, pred, share, seed=1):
    "`pred` with `share` of its errors set right."
    wrong = np.flatnonzero(pred != truth)
    fixed = np.random.default_rng(seed).choice(wrong, int(len(wrong) * share), replace=False)
    out = pred.copy()
    out[fixed] = truth[fixed]
    return out


def preds(name, ids, truth, pred, probs=None):
    return Predictions(name, ids, truth, pred, probs or {})


def test_identical_sides_give_an_interval_around_zero():
    ids, _, truth, pred = made_up()
    r = compare([preds('a', ids, truth, pred)], [preds('b', ids, truth, pred.copy())], draws=500)
    for m, v in r['metrics'].items():
        assert v['diff'] == 0 and v['low'] <= 0 <= v['high'] and v['p_b_better'] == 0, m


def test_a_tenth_of_the_errors_fixed_gives_an_interval_above_zero():
    ids, _, truth, pred = made_up()
    r = compare([preds('a', ids, truth, pred)], [preds('b', ids, truth, fix_errors(truth, pred, 0.1))], draws=1000)
    f = r['metrics']['f1_18']
    assert f['low'] > 0 and f['diff'] > 0 and f['p_b_better'] > 0.975


def test_the_point_estimates_are_mcls_evaluate_scores():
    ids, _, truth, pred = made_up(3)
    truth[truth == 17] = 16          # an 18-class label absent from the truth: it counts as 0, as in score()
    r = compare([preds('a', ids, truth, pred)], [preds('b', ids, truth, fix_errors(truth, pred, 0.5))], draws=100)
    sa, sb = score(truth, pred), score(truth, fix_errors(truth, pred, 0.5))
    assert r['metrics']['f1_18']['a'] == pytest.approx(sa.f1) and r['metrics']['f1_18']['b'] == pytest.approx(sb.f1)
    for t in LABEL_TASKS:
        assert r['metrics'][t]['a'] == pytest.approx(sa.task_f1[t])
        assert r['metrics'][t]['b'] == pytest.approx(sb.task_f1[t])


def test_persons_are_the_unit_and_widen_the_interval_over_photos(tmp_path):
    "photos of one person share their errors (gender, age): resampling photos alone understates the spread"
    ids, persons, truth, pred = made_up(5, error_rate=0.0)
    rng = np.random.default_rng(9)
    for p in rng.choice(PERSONS, 40, replace=False):       # a person's gender wrong on all 7 photos
        sel = slice(p * PHOTOS, (p + 1) * PHOTOS)
        m, g, a = decode(pred[sel])
        pred[sel] = m * 6 + (1 - g) * 3 + a
    b = fix_errors(truth, pred, 0.5)
    pd.DataFrame({'file': [f'eval/images/{i}' for i in ids], 'id': persons}).to_csv(tmp_path / 'map.csv', index=False)
    by_person = compare([preds('a', ids, truth, pred)], [preds('b', ids, truth, b)], tmp_path / 'map.csv', draws=800)
    by_photo = compare([preds('a', ids, truth, pred)], [preds('b', ids, truth, b)], None, draws=800)
    assert by_person['n_units'] == PERSONS and by_photo['n_units'] == PERSONS * PHOTOS and 'photos' in by_photo['units']
    width = {k: r['metrics']['gender']['high'] - r['metrics']['gender']['low'] for k, r in (('person', by_person),
                                                                                            ('photo', by_photo))}
    assert width['person'] > 1.5 * width['photo']


def test_runs_of_one_side_are_pooled():
    ids, _, truth, pred = made_up()
    b1, b2 = fix_errors(truth, pred, 0.2, seed=1), fix_errors(truth, pred, 0.05, seed=2)
    r = compare([preds('a', ids, truth, pred)], [preds('b1', ids, truth, b1), preds('b2', ids, truth, b2)], draws=300)
    assert r['metrics']['f1_18']['b'] == pytest.approx((score(truth, b1).f1 + score(truth, b2).f1) / 2)
    one = compare([preds('a', ids, truth, pred)], [preds('b1', ids, truth, b1)], draws=300)
    pooled = r['metrics']['f1_18']
    assert pooled['high'] - pooled['low'] > one['metrics']['f1_18']['high'] - one['metrics']['f1_18']['low']


def _probs_for(truth, sharp, seed):
    "Per-task probabilities that put `sharp` on the true class."
    rng = np.random.default_rng(seed)
    out = {}
    for i, (t, n) in enumerate(zip(LABEL_TASKS, (3, 2, 3))):
        y = decode(truth)[i]
        p = rng.random((len(y), n))
        p[np.arange(len(y)), y] += sharp
        out[t] = p / p.sum(1, keepdims=True)
    return out


def test_log_loss_is_compared_where_probabilities_exist_and_lower_wins():
    ids, _, truth, pred = made_up()
    r = compare([preds('a', ids, truth, pred, _probs_for(truth, 0.5, 1))],
                [preds('b', ids, truth, pred, _probs_for(truth, 3.0, 2))], draws=300)
    assert r['metrics']['logloss_age']['diff'] < 0 and r['metrics']['logloss_age']['p_b_better'] > 0.99
    assert 'logloss_mask' not in compare([preds('a', ids, truth, pred)], [preds('b', ids, truth, pred)],
                                         draws=100)['metrics']


def test_validation_folders_resample_train_csv_persons(tmp_path):
    ids, persons, truth, pred = made_up()
    files = np.array([f'/data/train/images/{p}/{i}' for p, i in zip(persons, ids)])
    for name, dec, sharp in (('a', pred, 1.5), ('b', fix_errors(truth, pred, 0.3), 2.0)):
        d = tmp_path / name
        d.mkdir()
        probs = _probs_for(dec, sharp, 0)            # argmax = the decisions
        for t in LABEL_TASKS: np.savez(d / f'{t}.valid.npz', files=files, probs=probs[t], labels=truth)
    a, b = read_side([tmp_path / 'a']), read_side([tmp_path / 'b'])
    r = compare(a, b, draws=300)
    assert r['n_units'] == PERSONS and r['units'].startswith('persons')
    assert r['metrics']['f1_18']['a'] == pytest.approx(score(truth, pred).f1) and r['metrics']['f1_18']['low'] > 0
    np.savez(tmp_path / 'b' / 'age.valid.npz', files=files[:-7], probs=_probs_for(pred, 1, 0)['age'][:-7],
             labels=truth[:-7])
    with pytest.raises(DataError, match=f'no prediction for {files[-7]}'): read_side([tmp_path / 'b'])




@pytest.mark.cli
def test_compare_command_on_submissions(tmp_path):
    ids, persons, truth, pred = made_up()
    pd.DataFrame({'ImageID': ids, 'ans': truth}).to_csv(tmp_path / 'answers.csv', index=False)
    write_submission(pd.DataFrame({'ImageID': ids, 'ans': pred}), _probs_for(pred, 1, 0), tmp_path / 'a.csv')
    pd.DataFrame({'ImageID': ids, 'ans': fix_errors(truth, pred, 0.1)}).to_csv(tmp_path / 'b.csv', index=False)
    pd.DataFrame({'ImageID': ids[::-1], 'ans': pred[::-1]}).to_csv(tmp_path / 'a2.csv', index=False)   # any row order
    r = _cli('compare', 'a.csv,a2.csv', 'b.csv', '--answers', 'answers.csv', '--json', 'cmp.json', '--draws', 500,
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / 'cmp.json').read_text())
    assert set(out) == {'f1_18', 'mask', 'gender', 'age', 'meta'}     # log-loss only where both sides have it
    assert set(out['f1_18']) == {'a', 'b', 'diff', 'low', 'high', 'p_b_better'} and out['f1_18']['low'] > 0
    assert out['meta']['a_runs'] == ['a.csv', 'a2.csv'] and 'photos' in out['meta']['units']
    assert (tmp_path / 'reports' / 'compare.png').stat().st_size > 0 and 'each photo resampled alone' in r.stdout
    pd.DataFrame({'ImageID': ids[1:], 'ans': pred[1:]}).to_csv(tmp_path / 'short.csv', index=False)
    bad = _cli('compare', 'a.csv', 'short.csv', '--answers', 'answers.csv', cwd=tmp_path)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and f'no prediction for {ids[0]}' in lines[0], bad.stderr


@pytest.mark.cli
def test_compare_with_zero_photos_is_one_error(tmp_path):
    for name in ('a.csv', 'b.csv', 'answers.csv'): _submission(tmp_path / name, [], [])
    r = _cli('compare', 'a.csv', 'b.csv', '--answers', 'answers.csv', cwd=tmp_path)
    one_line_error(r, 'no photos to compare')
    from mcls.compare import compare, read_side
    a, b = (_valid_folder(tmp_path / x, n=0) for x in 'ab')
    with pytest.raises(DataError, match='no photos'): compare(read_side([a]), read_side([b]))


@pytest.mark.parametrize('bad, words', [
    ({'age__probs': np.full((12, 3), np.nan)}, 'age probability nan'),
    ({'mask__probs': -np.ones((12, 3))}, 'mask probability -1.0'),
    ({'gender__probs': np.ones((12, 1))}, r'gender probabilities of shape \(12, 1\)'),
    ({'mask__probs': np.full((12, 6), 1 / 6)}, r'mask probabilities of shape \(12, 6\)'),
    ({'mask__labels': np.full(12, 25)}, 'label 25 is not a class 0-17'),
    ({'age__probs': np.full((5, 3), 1 / 3)}, r'not \(12, 3\)'),
])
def test_compare_checks_what_it_reads(tmp_path, bad, words):
    from mcls.compare import read_side
    folder = _valid_folder(tmp_path / 'run', **bad)
    with pytest.raises(DataError, match=words): read_side([folder])


@pytest.mark.cli
def test_one_person_cannot_be_resampled(tmp_path):
    one_line_error(_persons_case(tmp_path, ''.join(f'eval/images/{i}.jpg,eval,p0\n' for i in range(6))),
                   'one unit', 'at least two persons')


@pytest.mark.cli
def test_a_person_listed_on_several_rows_is_still_one_person(tmp_path):
    rows = ''.join(f'eval/images/{i}.jpg,eval,p{i // 2}\n' for i in range(6)) + 'eval/images/0.jpg,eval,p0\n'
    r = _persons_case(tmp_path, rows)
    assert r.returncode == 0 and 'over 3 persons' in r.stdout, r.stderr


@pytest.mark.cli
def test_draws_are_bounded_and_refused_at_once_beyond(tmp_path):
    "refused before anything is read or drawn: with sides that do not exist, the error is still the draws'"
    r = _cli('compare', tmp_path / 'no_a', tmp_path / 'no_b', '--draws', '100000000', cwd=tmp_path)
    one_line_error(r, '--draws 100000000', '100,000')
    assert 'no such' not in r.stderr and not (tmp_path / 'reports').exists()


def test_draws_in_chunks_give_the_one_chunk_result(tmp_path, monkeypatch):
    "memory is bounded by computing draws in chunks; the chunking does not change the statistics"
    import mcls.compare as C
    sides = [C.read_side([_valid_folder(tmp_path / x, n=60, persons=20, seed=k)]) for k, x in enumerate('ab')]
    whole = C.compare(*sides, draws=3000)
    monkeypatch.setattr(C, 'CHUNK_CELLS', 20 * 7)          # chunks of 7 draws
    chunked = C.compare(*sides, draws=3000)
    for m, v in whole['metrics'].items():
        w = chunked['metrics'][m]
        assert (w['a'], w['b'], w['diff']) == (v['a'], v['b'], v['diff'])
        assert abs(w['low'] - v['low']) < 0.05 and abs(w['high'] - v['high']) < 0.05
    assert len(chunked['differences']['f1_18']) == 3000

