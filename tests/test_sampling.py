"""Person-balanced epochs (`[train] photos_per_person`): the draw of each epoch, across epochs, seeds and ranks, and
`all` as before."""
import numpy as np
import pandas as pd
import pytest

from mcls.sampling import PersonDL, parse_photos_per_person, person_draws

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
