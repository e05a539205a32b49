import itertools

import numpy as np
import pytest

from mcls.labels import age_group, class_name, decode, encode

TRIPLES = list(itertools.product(range(3), range(2), range(3)))


@pytest.mark.parametrize('mask,gender,age', TRIPLES)
def test_encode_decode_every_class(mask, gender, age):
    label = encode(mask, gender, age)
    assert label == mask * 6 + gender * 3 + age
    assert decode(label) == (mask, gender, age)


def test_encode_is_a_bijection_onto_0_17():
    labels = [encode(*t) for t in TRIPLES]
    assert sorted(labels) == list(range(18))
    arr = encode(*map(np.array, zip(*TRIPLES)))
    assert arr.tolist() == labels
    assert [tuple(v) for v in np.stack(decode(arr), 1)] == TRIPLES


@pytest.mark.parametrize('bad', [-1, 18, [0, 18]])
def test_decode_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match='0-17'): decode(bad)


@pytest.mark.parametrize('boundary,expected', [
    (60, {0: 0, 29: 0, 30: 1, 57: 1, 58: 1, 59: 1, 60: 2, 75: 2}),
    (58, {0: 0, 29: 0, 30: 1, 57: 1, 58: 2, 59: 2, 60: 2, 75: 2}),
])
def test_age_group_at_both_boundaries(boundary, expected):
    for age, grp in expected.items(): assert age_group(age, boundary) == grp
    assert age_group(np.array(list(expected)), boundary).tolist() == list(expected.values())


def test_default_boundary_is_the_scoring_one():
    assert age_group(59) == 1 and age_group(60) == 2


def test_class_names_are_distinct():
    assert len({class_name(i) for i in range(18)}) == 18
    assert class_name(17) == 'not_wear/female/60+'
