"""Tests of mcls.csvs."""
import pytest

from mcls.dataset import load_eval, load_train
from mcls.errors import DataError
from tests.helpers import _csv_cases, _read_any


def test_corrections_with_an_extra_field_on_every_row(synth_root):
    fixes = synth_root / 'fixes.csv'
    person = load_train(synth_root / 'data').person.iloc[0]
    fixes.write_text(f'key,field,value\n{person},age,40,oops\n{person},gender,male,oops\n')
    with pytest.raises(DataError, match=r'fixes.csv: line 2 has 4 field\(s\) where the header has 3'):
        load_train(synth_root / 'data', fixes)


@pytest.mark.parametrize('name', ['train.csv', 'info.csv', 'corrections', 'answers', 'persons map'])
@pytest.mark.parametrize('damage,words', [('extra field', 'field'), ('bytes', 'not UTF-8'), ('no header',
                                                                                             'missing column')])
def test_every_csv_is_validated_where_it_is_read(synth_root, name, damage, words):
    path = _csv_cases(synth_root)[name]
    lines = path.read_text().splitlines()
    if damage == 'extra field': path.write_text('\n'.join([lines[0], *(l + ',x' for l in lines[1:])]) + '\n')
    elif damage == 'bytes': path.write_bytes(path.read_bytes() + b'\xff\xfe\n')
    else: path.write_text('\n'.join(lines[1:]) + '\n')
    with pytest.raises(DataError, match=f'{path.name}.*{words}'): _read_any(name, synth_root, path)


def test_csv_headers_with_a_byte_order_mark_and_an_empty_info_csv(synth_root):
    csv = synth_root / 'data' / 'train' / 'train.csv'
    csv.write_bytes(b'\xef\xbb\xbf' + csv.read_bytes())
    assert len(load_train(synth_root / 'data'))
    (synth_root / 'data' / 'eval' / 'info.csv').write_text('ImageID,ans\n')
    with pytest.raises(DataError, match='info.csv: no rows'): load_eval(synth_root / 'data')

