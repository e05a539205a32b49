"""Person-balanced epochs (`[train] photos_per_person`): the draw of each epoch, across epochs, seeds and ranks, and
`all` as before."""
import numpy as np
import pandas as pd
import pytest

from mcls.sampling import PersonDL, person_draws
from mcls.settings import parse_photos_per_person

STATES = np.array([0, 0, 0, 0, 0, 1, 2])       # mask1..5, incorrect_mask, normal


def _people(n: int, missing: dict | None = None):
    "Rows of n persons with 7 photos each (a person's photos shuffled in the table); `missing`: person -> rows dropped."
    rng = np.random.default_rng(0)
    rows = [(p, s) for p in range(n) for s in STATES]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    df = pd.DataFrame(rows, columns=['person', 'state'])
    for p, k in (missing or {}).items(): df = df.drop(df.index[(df.person == p) & (df.state == k)])
    return df.person.to_numpy(), df.state.to_numpy()


@pytest.mark.parametrize('k', [1, 2, 3, 4, 7])
def test_each_person_gives_k_photos_with_the_mask_states_in_place(k):
    persons, states = _people(20)
    idx = person_draws(persons, states, k, np.random.default_rng(1))
    assert len(idx) == 20 * k and len(set(idx.tolist())) == len(idx)        # no photo twice in an epoch
    counts = pd.DataFrame({'p': persons[idx], 's': states[idx]})
    assert (counts.groupby('p').size() == k).all()
    if k >= 3:       # one incorrect, one normal, the rest worn: for every person
        per = counts.groupby(['p', 's']).size().unstack(fill_value=0)
        assert (per[1] == 1).all() and (per[2] == 1).all() and (per[0] == k - 2).all()


def test_draws_differ_across_epochs_and_repeat_for_a_seed():
    persons, states = _people(30)
    draw = lambda seed, epoch: person_draws(persons, states, 3, np.random.default_rng([seed, epoch]))
    assert not np.array_equal(np.sort(draw(7, 0)), np.sort(draw(7, 1)))      # other worn photos
    assert np.array_equal(draw(7, 4), draw(7, 4))
    assert not np.array_equal(draw(7, 4), draw(8, 4))


def test_one_or_two_photos_keep_the_5_1_1_share_on_average():
    persons, states = _people(400)
    idx = person_draws(persons, states, 1, np.random.default_rng(3))
    share = np.bincount(states[idx], minlength=3) / len(idx)
    assert abs(share[0] - 5 / 7) < 0.06 and abs(share[1] - 1 / 7) < 0.05 and abs(share[2] - 1 / 7) < 0.05


def test_a_person_lacking_a_state_gets_what_they_have_and_old_persons_repeat():
    persons, states = _people(3, missing={0: 1})          # person 0 has no incorrect photo
    repeats = np.where(persons == 2, 3, 1)               # person 2 weighs 3 (old_weight)
    idx = person_draws(persons, states, 3, np.random.default_rng(0), repeats)
    got = pd.Series(persons[idx]).value_counts()
    assert got[0] == 3 and got[1] == 3 and got[2] == 9
    assert 1 not in states[idx[persons[idx] == 0]]


@pytest.mark.parametrize('text, want', [('all', None), ('ALL', None), ('3', 3), ('7', 7)])
def test_the_setting_takes_all_or_a_number(text, want):
    assert parse_photos_per_person(text) == want


@pytest.mark.parametrize('text', ['0', '8', 'three', '-1', ''])
def test_other_values_are_refused(text):
    with pytest.raises(ValueError, match='all or a number 1-7'): parse_photos_per_person(text)


def _dl(k=3, seed=5, n=12, **kw):
    persons, states = _people(n)
    return PersonDL(list(range(len(persons))), bs=4, shuffle=True, drop_last=True, persons=persons, states=states,
                    k=k, seed=seed, **kw), persons


def test_the_loader_draws_per_epoch_and_a_resumed_run_draws_the_same():
    dl, persons = _dl()
    assert len(dl) == 12 * 3 // 4
    dl.epoch = 0
    first = dl.get_idxs()
    dl.epoch = 2
    third = dl.get_idxs()
    resumed, _ = _dl()             # a new process resuming at epoch 2: no history of epochs 0 and 1
    resumed.epoch = 2
    assert resumed.get_idxs() == third != first
    assert pd.Series(persons[third]).value_counts().eq(3).all()


def test_two_ranks_take_disjoint_shares_that_cover_the_epoch(monkeypatch):
    """fastai's DistributedDL: rank 0's draw broadcast (here: the same draw on both), each rank its slice (36 photos:
    no padding, which would repeat a photo to even the shares)"""
    from fastai.distributed import DistributedDL
    monkeypatch.setattr(DistributedDL, '_broadcast', lambda self, t, rank: t)
    dl, _ = _dl(n=12)
    dl.epoch = 1
    parts = [DistributedDL(dl, rank=r, world_size=2).get_idxs() for r in (0, 1)]
    whole = dl.get_idxs()
    assert not set(parts[0]) & set(parts[1]) and sorted(parts[0] + parts[1]) == sorted(whole)


def test_a_copy_for_prediction_sees_every_photo_in_order():
    dl, persons = _dl()
    plain = dl.new(shuffle=False, drop_last=False)
    assert list(plain.get_idxs()) == list(range(len(persons)))


# --- in training ---

def _table(synth_root, **extra):
    from mcls.train import training_table
    from tests.conftest import tiny_settings
    s = tiny_settings(synth_root, **extra)
    return s, training_table(s, progress=False)


@pytest.mark.parametrize('per_person, old_weight, loader', [('all', 1, 'TfmdDL'), ('all', 3, 'WeightedDL'),
                                                           ('3', 1, 'PersonDL'), ('3', 3, 'PersonDL')])
def test_all_is_todays_loader_and_k_draws_per_person(synth_root, per_person, old_weight, loader):
    from mcls.learner import task_dls
    s, table = _table(synth_root, joint__photos_per_person=per_person, joint__old_weight=old_weight)
    df = table.assign(is_valid=table.fold == 0)
    dls = task_dls(df, s.tasks['joint'], workers=0)
    assert type(dls.train).__name__ == loader and type(dls.valid).__name__ != 'PersonDL'
    assert dls.valid.n == int(df.is_valid.sum())
    assert list(dls.valid.get_idxs()) == list(range(dls.valid.n))   # every photo, in order
    train = df[~df.is_valid]
    if loader == 'PersonDL':
        old = train[train.age_group == 2].person.nunique()
        want = 3 * (train.person.nunique() + (old_weight - 1) * old)
        assert dls.train.drawn == want and len(dls.train) == want // s.tasks['joint'].batch
        drawn = train.iloc[dls.train.get_idxs()]
        assert drawn.groupby('person').size().isin([3, 3 * old_weight]).all()


def test_a_resumed_run_draws_what_an_uninterrupted_one_draws(synth_root, monkeypatch):
    "the photos each epoch trains on, recorded as it starts: the same epochs 1 and 2 whether or not epoch 0 was killed"
    from fastai.vision.all import Callback

    import mcls.train as T
    s, table = _table(synth_root, train__photos_per_person='3', mask__epochs=3)
    seen = {}

    class Record(Callback):
        order = 0         # after DrawEpoch (-20) has told the loader its epoch
        def before_train(self): seen.setdefault(self.tag, {})[self.epoch] = list(self.dls.train.get_idxs())

    class KillAfterFirstEpoch(Callback):
        order = 99
        def after_epoch(self): raise KeyboardInterrupt

    real = T._fit_cbs
    def cbs(tag, kill):
        rec = Record()
        rec.tag = tag
        return lambda *a: [*real(*a), rec, *([KillAfterFirstEpoch()] if kill else [])]
    monkeypatch.setattr(T, '_fit_cbs', cbs('whole', False))
    T.train_task(table, s, 'mask', 0, progress=False)
    monkeypatch.setattr(T, '_fit_cbs', cbs('killed', True))
    s2 = dataclasses_replace_runs(s, synth_root / 'runs2')
    with pytest.raises(KeyboardInterrupt): T.train_task(table, s2, 'mask', 0, progress=False)
    monkeypatch.setattr(T, '_fit_cbs', cbs('resumed', False))
    T.resume_task(next((synth_root / 'runs2').iterdir()), export_dir=synth_root / 'models2', progress=False)
    assert sorted(seen['whole']) == [0, 1, 2] and sorted(seen['resumed']) == [1, 2]
    assert seen['killed'][0] == seen['whole'][0]
    assert all(seen['resumed'][e] == seen['whole'][e] for e in (1, 2))
    assert seen['whole'][1] != seen['whole'][2]


def dataclasses_replace_runs(s, runs):
    import dataclasses
    return dataclasses.replace(s, paths=dataclasses.replace(s.paths, runs=runs))


def test_drawn_together_a_persons_photos_are_next_to_each_other():
    from mcls.sampling import person_draws
    persons = np.repeat(np.arange(20), 7)
    states = np.tile([0, 0, 0, 0, 0, 1, 2], 20)
    idx = person_draws(persons, states, 3, np.random.default_rng(0), together=True)
    runs = persons[idx].reshape(-1, 3)
    assert (runs == runs[:, :1]).all() and sorted(runs[:, 0]) == list(range(20))     # each person's 3 in a row
    assert runs[:, 0].tolist() != sorted(runs[:, 0])                                  # persons in a random order


def test_a_consistency_batch_holds_whole_persons(synth_root):
    from mcls.joint import target_persons
    from mcls.learner import task_dls
    from mcls.train import training_table
    from tests.conftest import tiny_settings
    s = tiny_settings(synth_root, joint__consistency='0.5', joint__photos_per_person='3', joint__batch='9')
    table = training_table(s, progress=False).assign(is_valid=lambda d: d.fold == 0)
    dls = task_dls(table, s.tasks['joint'], workers=0)
    for _, y in list(dls.train)[:3]:
        _, counts = np.unique(target_persons(y.long()).numpy(), return_counts=True)
        assert (counts == 3).all()                     # 3 persons x their 3 drawn photos in each batch of 9


def test_person_consistent_training_trains_exports_and_predicts(synth_root):
    from mcls.train import train_task, training_table
    from tests.conftest import tiny_settings
    s = tiny_settings(synth_root, joint__consistency='0.5', joint__photos_per_person='3', joint__batch='9')
    table = training_table(s, progress=False)
    r = train_task(table, s, 'joint', 0, export_dir=synth_root / 'models' / 'fold0', progress=False)
    assert r.valid_f1 is not None and (synth_root / 'models' / 'fold0' / 'joint.safetensors').exists()
