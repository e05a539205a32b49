import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from fastai.vision.all import Callback, MixUp
from sklearn.metrics import f1_score

from mcls.joint import (
    AGE_SIGMA,
    AGE_THRESHOLDS,
    AGE_YEARS,
    JointLoss,
    decode_target,
    encode_target,
    group_probs,
    joint_f1,
    n_logits,
    split_probs,
)
from mcls.labels import decode, encode
from mcls.learner import ConfigError, check_task_settings, timm_split
from mcls.predict import predict_eval, predict_frame
from mcls.train import train_task, training_table
from mcls.tune import fit_offsets, load_oof
from tests.conftest import tiny_settings


def targets(n=32, seed=0):
    g = np.random.default_rng(seed)
    m, gen, a, years = g.integers(0, 3, n), g.integers(0, 2, n), g.integers(0, 3, n), g.integers(18, 80, n)
    return m, gen, a, years, torch.as_tensor(encode_target(m, gen, a, years))


def test_target_encoding_round_trips():
    m, g, a, years, t = targets(200)
    dm, dg, da, dy = (x.numpy() for x in decode_target(t))
    assert (dm == m).all() and (dg == g).all() and (da == a).all() and (dy == years).all()


@pytest.mark.parametrize('age_loss,gamma,ls', [('ce', 0.0, 0.0), ('focal', 2.0, 0.0), ('focal', 2.0, 0.1), ('ce', 0,
                                                                                                            0.2)])
@pytest.mark.parametrize('w', [(1.0, 1.0, 1.0), (0.5, 2.0, 3.0)])
def test_groups_loss_is_the_weighted_sum_of_the_task_losses(age_loss, gamma, ls, w):
    m, g, a, _, t = targets()
    out = torch.randn(len(t), 8, generator=torch.Generator().manual_seed(1)) * 2
    ce = lambda x, y: F.cross_entropy(x, torch.as_tensor(y), reduction='none', label_smoothing=ls)  # noqa: E731
    age = ce(out[:, 5:], a)
    if age_loss == 'focal':
        age = (1 - torch.exp(-F.cross_entropy(out[:, 5:], torch.as_tensor(a), reduction='none'))) ** gamma * age
    want = (w[0] * ce(out[:, :3], m) + w[1] * ce(out[:, 3:5], g) + w[2] * age).mean()
    got = JointLoss(w, 'groups', age_loss, gamma, ls)(out, t)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_ordinal_loss_is_binary_cross_entropy_per_year_threshold():
    m, g, a, years, t = targets()
    out = torch.randn(len(t), n_logits('ordinal'))
    above = torch.tensor([[float(y >= th) for th in AGE_THRESHOLDS] for y in years])
    want = (F.cross_entropy(out[:, :3], torch.as_tensor(m), reduction='none')
            + F.cross_entropy(out[:, 3:5], torch.as_tensor(g), reduction='none')
            + F.binary_cross_entropy_with_logits(out[:, 5:], above, reduction='none').mean(1))
    loss = JointLoss(age_head='ordinal', reduction='none')
    assert torch.allclose(loss(out, t), want, atol=1e-5)
    assert loss(out, t, reduction='sum').item() == pytest.approx(want.sum().item(), rel=1e-5)


def test_dist_loss_is_cross_entropy_against_a_gaussian_over_years():
    m, g, a, years, t = targets()
    out = torch.randn(len(t), n_logits('dist'))
    grid = np.array(AGE_YEARS, float)
    soft = np.exp(-0.5 * ((grid[None] - np.clip(years, grid[0], grid[-1])[:, None]) / AGE_SIGMA) ** 2)
    soft = torch.tensor(soft / soft.sum(1, keepdims=True), dtype=torch.float)
    want = (F.cross_entropy(out[:, :3], torch.as_tensor(m), reduction='none')
            + F.cross_entropy(out[:, 3:5], torch.as_tensor(g), reduction='none')
            - (soft * F.log_softmax(out[:, 5:], 1)).sum(1))
    assert torch.allclose(JointLoss(age_head='dist', reduction='none')(out, t), want, atol=1e-5)


def test_dist_loss_is_lowest_at_the_true_age():
    "Logits peaked at each year: the loss of a 40-year-old is least where the peak is 40, and rises away from it."
    t = torch.as_tensor(encode_target([0], [0], [1], [40]))
    loss = JointLoss(age_head='dist', reduction='none')
    per_peak = []
    for y in AGE_YEARS:
        out = torch.zeros(1, n_logits('dist'))
        out[0, 5:] = -0.5 * ((torch.tensor(AGE_YEARS, dtype=torch.float) - y) / AGE_SIGMA) ** 2
        per_peak.append(loss(out, t).item())
    best = int(np.argmin(per_peak))
    assert AGE_YEARS[best] == 40 and per_peak[best - 5] > per_peak[best - 1] > per_peak[best]


@pytest.mark.parametrize('head', ['groups', 'ordinal', 'dist'])
def test_activation_gives_a_distribution_per_task_and_decodes_to_the_18_classes(head):
    out = torch.randn(50, n_logits(head)) * 4
    loss = JointLoss(age_head=head)
    p = loss.activation(out)
    assert p.shape == (50, 8) and (p >= 0).all()
    for part in (p[:, :3], p[:, 3:5], p[:, 5:]): assert torch.allclose(part.sum(1), torch.ones(50), atol=1e-5)
    lab = loss.decodes(p).numpy()
    m, g, a = decode(lab)
    assert (m == p[:, :3].argmax(1).numpy()).all() and (g == p[:, 3:5].argmax(1).numpy()).all()
    assert (a == p[:, 5:].argmax(1).numpy()).all()
    assert {k: v.shape[1] for k, v in split_probs(p.numpy()).items()} == {'mask': 3, 'gender': 2, 'age': 3}


def test_ordinal_groups_read_the_boundary_threshold():
    "A face surely >= 30 and 50/50 around 58-60: the old group's probability is P(age >= boundary)."
    logits = torch.full((1, len(AGE_THRESHOLDS)), -20.0)
    logits[0, :AGE_THRESHOLDS.index(58) + 1] = 20.0      # surely >= 58, surely < 60
    assert group_probs(logits, 'ordinal', 60)[0].tolist() == pytest.approx([0, 1, 0], abs=1e-6)
    assert group_probs(logits, 'ordinal', 58)[0].tolist() == pytest.approx([0, 0, 1], abs=1e-6)


def test_dist_groups_sum_the_years_of_each_group():
    "Half the mass at 29, a quarter at 30, a quarter at 58: <30 0.5, 30-59 0.5 at boundary 60, the 58 in 60+ at 58."
    logits = torch.full((1, len(AGE_YEARS)), -30.0)
    for y, w in ((29, 0.5), (30, 0.25), (58, 0.25)): logits[0, AGE_YEARS.index(y)] = float(np.log(w))
    assert group_probs(logits, 'dist', 60)[0].tolist() == pytest.approx([0.5, 0.5, 0], abs=1e-6)
    assert group_probs(logits, 'dist', 58)[0].tolist() == pytest.approx([0.5, 0.25, 0.25], abs=1e-6)


@pytest.mark.parametrize('part', ['all', 'mask', 'gender', 'age'])
def test_joint_f1_is_sklearn_macro_f1_of_the_decoded_labels(part):
    m, g, a, _, t = targets(300, seed=3)
    out = torch.randn(300, 8, generator=torch.Generator().manual_seed(4))
    loss = JointLoss()
    pred, truth = loss.decodes(loss.activation(out)).numpy(), encode(m, g, a)
    if part != 'all':
        i = ('mask', 'gender', 'age').index(part)
        pred, truth = decode(pred)[i], decode(truth)[i]
    assert joint_f1(out, t, loss, part) == pytest.approx(f1_score(truth, pred, average='macro'))


def test_mixup_mixes_the_joint_losses_of_two_targets():
    "fastai's MixUp needs y_int and a settable reduction: its loss is the lerp of the two targets' losses."
    _, _, _, _, t = targets(8)
    out = torch.randn(8, 8)
    loss, mix = JointLoss(), MixUp(0.4)
    mix.learn = type('L', (), {'training': True})()
    mix.old_lf, mix.yb1, mix.lam = loss, (t.flip(0),), torch.full((8,), 0.3)
    want = torch.lerp(JointLoss(reduction='none')(out, t.flip(0)), JointLoss(reduction='none')(out, t), 0.3).mean()
    assert mix.lf(out, t).item() == pytest.approx(want.item(), rel=1e-6) and loss.reduction == 'mean'


def test_body_groups_cover_every_parameter_once():
    from mcls.learner import make_model
    s = tiny_settings(__import__('pathlib').Path('/nonexistent'))
    model = make_model(s.tasks['joint'])
    groups = timm_split(model)
    flat = [id(p) for g in groups for p in g]
    assert len(groups) == 4 and all(groups) and len(flat) == len(set(flat)) == len(list(model.parameters()))


@pytest.mark.parametrize('bad,match', [({'age_head': 'ordinal', 'boundary': 59}, 'even ages'),
                                        ({'age_head': 'dist', 'boundary': 80}, 'dist head has years'),
                                        ({'task_weights': (1.0, 1.0)}, 'needs 3 values'),
                                        ({'fit': 'fine_tune', 'freeze_epochs': 3, 'epochs': 3}, 'freeze_epochs'),
                                        ({'precision': 'fp8'}, 'precision'), ({'mix': 'cutout'}, 'mix')])
def test_joint_settings_are_checked_before_training(tmp_path, bad, match):
    import dataclasses
    ts = dataclasses.replace(tiny_settings(tmp_path).tasks['joint'], **bad)
    with pytest.raises(ConfigError, match=match): check_task_settings(ts)


@pytest.mark.parametrize('head', ['ordinal', 'dist'])
def test_year_heads_are_refused_for_task_learners(tmp_path, head):
    import dataclasses
    ts = dataclasses.replace(tiny_settings(tmp_path).tasks['age'], age_head=head)
    with pytest.raises(ConfigError, match=f'age_head = {head} needs the joint learner'): check_task_settings(ts)


def test_focal_with_label_smoothing_is_refused_for_task_learners(tmp_path):
    import dataclasses
    ts = dataclasses.replace(tiny_settings(tmp_path).tasks['age'], loss='focal', label_smoothing=0.1)
    with pytest.raises(ConfigError, match='label_smoothing'): check_task_settings(ts)


@pytest.fixture(scope='module')
def joint_run(tmp_path_factory):
    "The joint learner (ordinal age head, fine_tune, bf16 autocast, MixUp, 60+ oversampled) trained 3 epochs."
    from mcls.synth import make_dataset
    root = tmp_path_factory.mktemp('joint')
    make_dataset(root / 'data', persons=24, eval_persons=4, seed=2)
    s = tiny_settings(root, joint__age_head='ordinal', joint__fit='fine_tune', joint__epochs=3, joint__lr='3e-3',
                      joint__precision='bf16', joint__mix='mixup', joint__old_weight=3)
    table = training_table(s, progress=False)

    class Watch(Callback):      # what each epoch trains: is the body frozen, which rates do the groups get
        def __init__(self): self.seen = []
        def after_epoch(self):
            body = next(iter(self.learn.model[0].parameters()))
            self.seen.append((body.requires_grad, [h['lr'] for h in self.learn.opt.hypers]))
    watch = Watch()
    from mcls import train as train_mod
    orig = train_mod._fit_cbs
    train_mod._fit_cbs = lambda *a, **k: [*orig(*a, **k), watch]
    try:
        r = train_task(table, s, 'joint', 0, export_dir=root / 'models' / 'fold0', progress=False)
    finally:
        train_mod._fit_cbs = orig
    return {'root': root, 's': s, 'table': table, 'result': r, 'watch': watch.seen, 'models': root / 'models' / 'fold0'}


def test_fine_tune_is_one_history_with_a_frozen_then_unfrozen_body(joint_run):
    r, seen = joint_run['result'], joint_run['watch']
    hist = pd.read_csv(r.run_dir / 'history.csv')
    assert hist.epoch.tolist() == [0, 1, 2]
    assert {'f1_score', 'mask_f1', 'gender_f1', 'age_f1'} <= set(hist.columns)
    assert [frozen for frozen, _ in seen] == [False, True, True]
    lrs = seen[1][1]           # unfrozen: the earliest body group far below the head
    assert len(lrs) == 4 and lrs[0] < lrs[1] < lrs[2] < lrs[3] and lrs[3] / lrs[0] == pytest.approx(100, rel=1e-3)
    meta = json.loads((r.run_dir / 'run.json').read_text())
    assert meta['precision'] == 'bf16 channels_last' and set(meta['valid_scores']) == {'f1_score', 'mask_f1',
                                                                                      'gender_f1', 'age_f1'}


def test_joint_learner_exports_predicts_and_tunes(joint_run):
    d = joint_run['models']
    assert {'joint.pkl', 'joint.safetensors', 'joint.json', 'mask.valid.npz', 'gender.valid.npz',
            'age.valid.npz'} <= {p.name for p in d.iterdir()}
    s = joint_run['s']
    df = joint_run['table'].head(12)
    labels, probs = predict_frame(df, [d], s.predict, tta=True)
    assert labels.shape == (12,) and set(probs) == {'mask', 'gender', 'age'}
    assert all(np.allclose(p.sum(1), 1, atol=1e-4) for p in probs.values())
    assert (labels == encode(*(probs[t].argmax(1) for t in ('mask', 'gender', 'age')))).all()
    pickle_labels, _ = predict_frame(df, [d], s.predict, tta=False, pickle=True)
    plain_labels, _ = predict_frame(df, [d], s.predict, tta=False)
    assert (pickle_labels == plain_labels).all()
    for t in ('mask', 'gender', 'age'):
        p, y = load_oof([d], t)
        assert len(p) == len(y) == int((joint_run['table'].fold == 0).sum())
        fit_offsets(p, y)
    sub = predict_eval(s, [d], joint_run['root'] / 'sub.csv', tta=False, progress=False)
    assert sub.ans.between(0, 17).all()


def test_albumentations_follow_torchs_seed():
    from fastai.vision.all import PILImage

    from mcls.augment import AlbumentationsTransform
    img = PILImage.create(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))

    def draw(seed):      # each training run builds its pipeline anew after fastai's set_seed
        torch.manual_seed(seed)
        tf = AlbumentationsTransform('light_real')
        return [np.asarray(tf.encodes(img)) for _ in range(4)]
    a, b, c = draw(1), draw(1), draw(2)
    assert all((x == y).all() for x, y in zip(a, b)) and any((x != y).any() for x, y in zip(a, c))


@pytest.mark.parametrize('task', ['mask', 'gender', 'age'])
def test_interpret_reads_a_joint_learners_head(joint_run, task, tmp_path):
    from PIL import Image

    from mcls.interpret import interpret_task
    paths = interpret_task(joint_run['table'], task, joint_run['models'], 0, tmp_path, k=6)
    assert [p.name for p in paths] == [f'{task}_fold0_confusion.png', f'{task}_fold0_top_losses.png']
    assert all(Image.open(p).size[0] > 100 for p in paths)


# --- person-consistent training ---

def test_targets_carry_the_person_without_changing_what_they_decode_to():
    from mcls.joint import target_persons
    m, g, a, years = [0, 2, 1], [1, 0, 1], [2, 0, 1], [75, 18, 45]
    plain = torch.as_tensor(encode_target(m, g, a, years))
    tagged = torch.as_tensor(encode_target(m, g, a, years, person=[0, 7, 1234]))
    assert all(torch.equal(x, y) for x, y in zip(decode_target(plain), decode_target(tagged)))
    assert target_persons(tagged).tolist() == [0, 7, 1234] and target_persons(plain).tolist() == [0, 0, 0]


def test_the_consistency_term_pulls_each_photo_towards_its_persons_mean():
    from mcls.joint import consistency_term
    persons = torch.tensor([0, 0, 1, 1, 2])
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [1.0, 0.0], [3.0, -3.0]], requires_grad=True)
    term = consistency_term([torch.log_softmax(logits, -1)], persons)
    assert term[0] > 0 and term[1] > 0                     # person 0's photos disagree
    assert term[2:].abs().max() < 1e-6                     # person 1 agrees; person 2 is alone in the batch
    term.sum().backward()
    g = logits.grad
    assert g[0, 0] > 0 and g[1, 1] > 0                     # descending lowers each photo's own favourite ...
    assert g[0, 1] < 0 and g[1, 0] < 0                     # ... and raises the other photo's: towards the mean
    assert g[2:].abs().max() < 1e-6


def test_with_teachers_the_term_pulls_only_the_others_towards_the_teachers():
    from mcls.joint import consistency_term
    persons = torch.tensor([0, 0, 0, 1, 1])
    teachers = torch.tensor([True, False, False, False, False])     # person 1 has no teacher in the batch
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 1.0], [0.0, 2.0], [2.0, 0.0]], requires_grad=True)
    term = consistency_term([torch.log_softmax(logits, -1)], persons, teachers)
    assert term[1] > term[2] > 0                            # the further from the teacher, the larger
    assert term[0].abs() < 1e-6 and term[3:].abs().max() < 1e-6
    term.sum().backward()
    g = logits.grad
    assert g[0].abs().max() < 1e-6 and g[3:].abs().max() < 1e-6   # the teacher and the untaught are not moved
    assert g[1, 1] > 0 and g[1, 0] < 0 and g[2, 1] > 0       # descending moves the others to the teacher's class 0


@pytest.mark.parametrize('target', ['mean', 'unmasked'])
def test_the_consistency_target_decides_which_photos_the_term_pulls(target):
    from mcls.joint import encode_target
    m, gen, a, years = [2, 0, 0], [0, 0, 0], [0, 0, 0], [20, 20, 20]      # unmasked, worn, worn
    t = torch.as_tensor(encode_target(m, gen, a, years, person=[3, 3, 3]))
    out = torch.tensor([[2.0, 0, 0, 2, 0, 2, 0, 0], [2.0, 0, 0, 0, 2, 0, 2, 0], [2.0, 0, 0, 0, 2, 0, 2, 0]])
    extra = (JointLoss(age_loss='ce', consistency=0.5, consistency_target=target)(out, t, reduction='none')
             - JointLoss(age_loss='ce')(out, t, reduction='none'))
    assert (extra[1:] > 0).all()
    assert (extra[0] > 0) if target == 'mean' else extra[0].abs() < 1e-6     # the unmasked photo teaches


def test_joint_loss_adds_the_term_only_when_asked():
    from mcls.joint import encode_target
    m, gen, a, years = [0, 0], [0, 0], [0, 2], [20, 70]
    t = torch.as_tensor(encode_target(m, gen, a, years, person=[3, 3]))
    out = torch.tensor([[2.0, 0, 0, 1, 0, 2, 0, 0], [2.0, 0, 0, 0, 1, 0, 0, 2]])
    base = JointLoss(age_loss='ce')(out, t, reduction='none')
    pulled = JointLoss(age_loss='ce', consistency=0.5)(out, t, reduction='none')
    assert (pulled > base).all()
    assert torch.allclose(JointLoss(age_loss='ce', consistency=0.5)(out[:1], t[:1], reduction='none'), base[:1])
