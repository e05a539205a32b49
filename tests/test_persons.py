import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mcls.labels import decode
from mcls.persons import (
    MASK_SLOTS,
    assign_masks,
    choose_threshold,
    consistent_labels,
    group_photos,
    group_quality,
    pair_scores,
)
from mcls.train import train_task
from tests.conftest import tiny_settings
from tests.helpers import _cli


def people(n_persons=12, per=7, noise=0.05, dim=16, seed=0):
    "Embeddings of persons as tight clouds around random directions."
    g = np.random.default_rng(seed)
    centres = g.normal(size=(n_persons, dim))
    emb = np.repeat(centres, per, 0) + g.normal(scale=noise, size=(n_persons * per, dim))
    return emb, np.repeat(np.arange(n_persons), per)


def test_separated_persons_are_found_exactly():
    emb, persons = people()
    info = choose_threshold(emb, persons)
    groups = group_photos(emb, info['threshold'])
    q = group_quality(groups, persons)
    assert info['precision'] == 1.0 and q == {'purity': 1.0, 'completeness': 1.0, 'groups_of_7': 1.0, 'groups': 12}


def test_two_persons_merged_at_a_loose_threshold_are_split_apart():
    g = np.random.default_rng(5)
    centre = g.normal(size=16)
    emb = np.vstack([centre + 0.3 * g.normal(size=16) + 0.02 * g.normal(size=(7, 16)) for _ in range(2)])
    groups = group_photos(emb, 0.9)            # loose enough to merge them into one group of 14 first
    assert group_quality(groups, np.repeat([0, 1], 7))['purity'] == 1.0 and len(np.unique(groups)) == 2


def test_no_group_is_larger_than_seven():
    emb, _ = people(n_persons=1, per=15, noise=0.01)
    sizes = np.bincount(group_photos(emb, 0.5))
    assert sizes.sum() == 15 and sizes.max() <= 7


def test_unrelated_photos_stay_single():
    emb, persons = people(n_persons=40, per=1)
    assert len(np.unique(group_photos(emb, choose_threshold(*people())['threshold']))) == 40


def test_weak_embeddings_turn_grouping_off():
    g = np.random.default_rng(1)
    emb, persons = g.normal(size=(70, 8)), np.repeat(np.arange(10), 7)    # no identity in them at all
    info = choose_threshold(emb, persons)
    assert info['threshold'] == 0.0 and len(np.unique(group_photos(emb, info['threshold']))) == 70


def test_pair_scores_count_pairs():
    assert pair_scores(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])) == (pytest.approx(1 / 3), pytest.approx(1 / 2))


def mask_logp(states, confidence=0.9):
    p = np.full((len(states), 3), (1 - confidence) / 2)
    p[np.arange(len(states)), states] = confidence
    return np.log(p)


def test_a_person_gets_five_one_one_when_one_photo_is_unsure():
    logp = mask_logp([0, 0, 0, 0, 0, 2, 2])        # incorrect read as not worn, but less surely
    logp[5] = np.log([0.1, 0.4, 0.5])
    assert sorted(assign_masks(logp, margin=2.0)) == sorted(MASK_SLOTS)


def test_a_person_never_masked_is_not_forced_into_five_one_one():
    logp = mask_logp([2] * 7, confidence=0.95)
    assert assign_masks(logp, margin=2.0) is None
    labels, stats = consistent_labels({'mask': logp, 'gender': np.log(np.full((7, 2), 0.5)) + [0, 0.1],
                                       'age': np.log(np.full((7, 3), 1 / 3))}, np.zeros(7, int), margin=2.0)
    assert (decode(labels)[0] == 2).all() and stats['mask_assigned_groups'] == 0


def test_groups_share_gender_and_age_and_singles_keep_their_answers():
    g = np.random.default_rng(3)
    logp = {t: np.log(g.dirichlet(np.ones(k), 9)) for t, k in (('mask', 3), ('gender', 2), ('age', 3))}
    groups = np.array([0, 0, 0, 0, 0, 0, 0, 1, 2])
    labels, stats = consistent_labels(logp, groups, margin=50.0)
    m, gen, a = decode(labels)
    assert len(set(gen[:7])) == 1 and gen[0] == logp['gender'][:7].mean(0).argmax()
    assert len(set(a[:7])) == 1 and sorted(m[:7]) == sorted(MASK_SLOTS)
    for i in (7, 8):
        assert (m[i], gen[i], a[i]) == tuple(logp[t][i].argmax() for t in ('mask', 'gender', 'age'))
    assert stats == {'groups': 3, 'grouped_photos': 7, 'groups_of_7': 1, 'mask_assigned_groups': 1}


SHARED = Path(__file__).resolve().parents[2] / 'shared' / 'weights'


def identity_files() -> dict:
    "The OpenCV Zoo files of ../shared (the only copy here); tests that need them skip where it is absent."
    sface = SHARED / 'face_recognition_sface_2021dec_int8bq.onnx'
    if not sface.exists(): pytest.skip(f'{sface} is not here (SFace weights: OpenCV Zoo)')
    return {'identity_weights': sface, 'detector_weights': SHARED / 'face_detection_yunet_2023mar_int8bq.onnx'}


def test_consistent_labels_decide_only_the_tasks_asked():
    g = np.random.default_rng(4)
    logp = {t: np.log(g.dirichlet(np.ones(k), 7)) for t, k in (('mask', 3), ('gender', 2), ('age', 3))}
    own = [logp[t].argmax(1) for t in ('mask', 'gender', 'age')]
    m, gen, a = decode(consistent_labels(logp, np.zeros(7, int), margin=50.0, tasks=('gender',))[0])
    assert len(set(gen)) == 1 and (m == own[0]).all() and (a == own[2]).all()


def test_identity_embeddings_of_tiny_data_are_cached_and_unit_length(trained, tmp_path):
    from mcls.identity import ALIGNMENTS, identity_embeddings
    files = identity_files()
    crops = [str(shutil.copy(c, tmp_path / f'{i}.jpg')) for i, c in enumerate(trained['table'].crop.head(6))]
    stats = {}
    emb = identity_embeddings(crops, files['identity_weights'], files['detector_weights'], stats=stats)
    assert emb.shape == (6, 128) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert stats['embedded'] == 6 and sum(v for k, v in stats.items() if k.startswith('landmarks_')) == 6
    again = {}
    assert np.array_equal(identity_embeddings(crops, files['identity_weights'], stats=again), emb)
    assert again['cached'] == 6 and again['embedded'] == 0
    for how in ALIGNMENTS:      # every alignment gives a face the model takes
        assert identity_embeddings(crops[:2], files['identity_weights'], how=how).shape == (2, 128)


def test_groups_never_exceed_seven_even_when_everything_looks_alike():
    emb = np.random.default_rng(0).normal(size=(1, 16)).repeat(30, 0) + 1e-3
    assert np.bincount(group_photos(emb, 0.9)).max() <= 7


def test_persons_command_writes_the_table_and_sheet_with_opencv_quiet(trained, tmp_path):
    files = identity_files()
    root = trained['root']
    r = _cli('persons', '--data', root / 'data', '--set', f'paths.cache={tmp_path / "crops"}', '--set', 'crop.size=64',
             '--set', f'predict.identity_weights={files["identity_weights"]}',
             '--set', f'predict.detector_weights={files["detector_weights"]}', '--out', tmp_path / 'p.csv',
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert '[ WARN' not in r.stderr and '[ WARN' not in r.stdout, r.stderr
    t = pd.read_csv(tmp_path / 'p.csv', dtype={'ImageID': str})
    info = pd.read_csv(root / 'data' / 'eval' / 'info.csv', dtype={'ImageID': str})
    assert t.ImageID.tolist() == info.ImageID.tolist() and list(t.columns) == ['ImageID', 'group', 'size', 'similarity']
    assert (t['size'] <= 7).all() and (t.groupby('group')['size'].first() == t.group.value_counts().sort_index()).all()
    assert (tmp_path / 'p.png').stat().st_size > 0


def test_persons_auto_without_the_weights_is_one_line(trained, tmp_path):
    r = _cli('predict', '--data', trained['root'] / 'data', '--models', trained['models'], '--persons', 'auto',
             '--set', 'predict.identity_weights=nowhere/sface.onnx', cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert 'identity_weights' in lines[0] and 'OpenCV Zoo' in lines[0], r.stderr
    assert not (tmp_path / 'submission.csv').exists()




def test_predict_with_persons_reads_no_answers_and_changes_nothing_for_unrelated_photos(trained, tmp_path):
    "Eval photos of different persons (one each), answers and build metadata removed: auto == off."
    import dataclasses
    import shutil

    from mcls.predict import predict_eval
    s, root = trained['settings'], trained['root']
    data = tmp_path / 'data'
    shutil.copytree(root / 'data', data)
    meta = pd.read_csv(data / 'build_meta.csv', dtype=str)
    (data / 'eval' / 'answers.csv').unlink()
    (data / 'build_meta.csv').unlink()
    one_each = meta[meta.split == 'eval'].groupby('id').head(1).file.str.rsplit('/', n=1).str[-1]
    pd.DataFrame({'ImageID': one_each, 'ans': 0}).to_csv(data / 'eval' / 'info.csv', index=False)
    models = tmp_path / 'models'
    shutil.copytree(trained['models'], models)
    sd = dataclasses.replace(s, paths=dataclasses.replace(s.paths, data=data, cache=tmp_path / 'crops'),
                             predict=dataclasses.replace(s.predict, **identity_files()))
    off = predict_eval(sd, [models], tmp_path / 'off.csv', tta=False, progress=False, persons='off')
    auto = predict_eval(sd, [models], tmp_path / 'auto.csv', tta=False, progress=False, persons='auto')
    assert (off.ans.to_numpy() == auto.ans.to_numpy()).all()
    z = np.load(tmp_path / 'auto.csv.probs.npz')
    assert 'groups' in z and len(list((tmp_path / 'crops' / 'persons').glob('threshold-*.json'))) == 1


def test_pseudo_labels_join_training_only_and_are_listed_in_the_run(trained, tmp_path):
    from mcls.predict import predict_eval
    from mcls.pseudo import add_pseudo, pseudo_rows
    s = trained['settings']
    predict_eval(s, [trained['models']], tmp_path / 'sub.csv', tta=False, progress=False)
    probs = tmp_path / 'sub.csv.probs.npz'
    z = np.load(probs)
    conf = np.min([z[t].max(1) for t in ('mask', 'gender', 'age')], axis=0)
    cut = float(np.median(conf))
    rows = pseudo_rows(probs, cut)
    assert len(rows) == int((conf >= cut).sum()) and (rows.confidence >= cut).all()
    table = add_pseudo(trained['table'], s, probs, cut)
    extra = table[table.pseudo]
    assert len(extra) == len(rows) and (extra.fold == -1).all()
    assert extra.crop.map(lambda p: __import__('os').path.exists(p)).all()
    r = train_task(table, s, 'gender', 0, progress=False)
    listed = pd.read_csv(r.run_dir / 'pseudo.csv')
    assert len(listed) == len(rows) and json.loads((r.run_dir / 'run.json').read_text())['pseudo_rows'] == len(rows)
    valid = np.load(r.run_dir / 'gender.valid.npz')
    assert len(valid['files']) == int((trained['table'].fold == 0).sum())      # validation has no pseudo rows


def test_persons_auto_without_a_threshold_says_it_does_nothing(monkeypatch, caplog, synth_root):
    import mcls.identity as I
    import mcls.persons as P
    s = tiny_settings(synth_root)
    monkeypatch.setattr(P, 'person_threshold', lambda s: {'threshold': 0.0, 'align': 'eyes', 'photos': 40})
    monkeypatch.setattr(I, 'identity_embeddings', lambda crops, *a, **k: np.ones((len(crops), 4)))   # identical faces
    with caplog.at_level(logging.WARNING):
        groups, _, _ = P.group_eval(s, ['a'] * 7)
    assert len(set(groups)) == 7                        # nothing grouped, as the threshold says...
    assert 'persons auto does nothing here' in caplog.text and 'persons = off' in caplog.text   # ...and it is said

