"""Tests of mcls.evaluate."""
import pytest

from mcls.errors import DataError
from tests.helpers import _persons_case, _submission, one_line_error


@pytest.mark.cli
def test_a_persons_map_with_empty_ids_is_refused(tmp_path):
    r = _persons_case(tmp_path, ''.join(f'eval/images/{i}.jpg,eval,\n' for i in range(6)))
    one_line_error(r, 'meta.csv', 'row 2 has no person id')


@pytest.mark.cli
def test_a_photo_given_two_persons_is_refused(tmp_path):
    rows = ''.join(f'eval/images/{i}.jpg,eval,p{i // 2}\n' for i in range(6)) + 'eval/images/0.jpg,eval,p9\n'
    one_line_error(_persons_case(tmp_path, rows), 'photo 0.jpg is given two persons')


def test_evaluate_against_answers_for_fewer_photos_is_refused(tmp_path):
    from mcls.evaluate import evaluate_files
    ids = [f'{i}.jpg' for i in range(14)]
    sub = _submission(tmp_path / 'sub.csv', ids, [0] * 14)
    ans = _submission(tmp_path / 'ans.csv', ids[:4], [0] * 4)
    with pytest.raises(DataError,
                       match=r'no answer for 10 ImageID\(s\) of .*sub.csv, first 4.jpg'): evaluate_files(sub, ans)

