import numpy as np
import pandas as pd
import pytest

from mcls.folds import assign_folds, fold_mask
from mcls.labels import encode


def table(persons=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(persons):
        g, a = int(rng.integers(2)), int(rng.choice(3, p=[0.45, 0.45, 0.1]))
        rows += [(f'p{p}', m, g, a) for m in (0, 0, 0, 0, 0, 1, 2)]
    df = pd.DataFrame(rows, columns=['person', 'mask', 'gender', 'age_group'])
    df['label'] = encode(df['mask'].to_numpy(), df.gender.to_numpy(), df.age_group.to_numpy())
    return df


@pytest.mark.parametrize('n_folds', [2, 3, 5])
@pytest.mark.parametrize('seed', [0, 777])
def test_no_person_in_two_folds(n_folds, seed):
    df = table(seed=seed)
    folds = assign_folds(df, n_folds, 'person', seed)
    assert set(folds) == set(range(n_folds))
    assert df.assign(fold=folds).groupby('person').fold.nunique().eq(1).all()


def test_person_folds_are_stratified_and_seeded():
    df = table(200)
    folds = assign_folds(df, 5, 'person', 777)
    share = df.assign(fold=folds).groupby('fold').gender.mean()
    assert share.max() - share.min() < 0.15
    assert (assign_folds(df, 5, 'person', 777) == folds).all()
    assert not (assign_folds(df, 5, 'person', 1) == folds).all()


def test_image_folds_split_persons():
    df = table(60)
    folds = assign_folds(df, 5, 'image', 777)
    assert df.assign(fold=folds).groupby('person').fold.nunique().max() > 1   # the leak the seed compared


def test_fold_mask():
    folds = np.array([0, 1, 2, 1])
    assert fold_mask(folds, 1).tolist() == [False, True, False, True]
    with pytest.raises(ValueError, match='folds are 0-2'): fold_mask(folds, 3)


@pytest.mark.parametrize('n,match', [(1, 'at least 2 folds'), (99, 'use at most')])
def test_impossible_fold_counts_are_one_clear_error(n, match):
    from mcls.errors import DataError
    df = pd.DataFrame({'person': np.repeat(['a', 'b', 'c'], 7), 'gender': 0, 'age_group': 0, 'label': 0})
    with pytest.raises(DataError, match=match): assign_folds(df, n)
