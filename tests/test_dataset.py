import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mcls.crop import attach_crops, crop_images
from mcls.dataset import DataError, LoadReport, load_eval, load_images, load_train
from mcls.images import open_rgb
from mcls.synth import make_dataset
from tests.conftest import tiny_settings
from tests.helpers import _cli, _info


@pytest.fixture
def awkward(tmp_path):
    info = make_dataset(tmp_path / 'data', persons=8, eval_persons=2, seed=3, awkward=True)
    return tmp_path, info


def test_table_columns_and_labels(synth_root):
    df = load_images(synth_root / 'data')
    tr, ev = df[df.split == 'train'], df[df.split == 'eval']
    assert len(tr) == 15 * 7 and len(ev) == 3 * 7
    assert (tr.label == tr['mask'] * 6 + tr.gender * 3 + tr.age_group).all()
    assert set(tr['mask']) == {0, 1, 2} and tr.groupby('person').size().eq(7).all()
    assert (tr.groupby('person')['mask'].apply(sorted).map(tuple) == (0, 0, 0, 0, 0, 1, 2)).all()
    info = pd.read_csv(synth_root / 'data' / 'eval' / 'info.csv')
    assert ev.image_id.tolist() == info.ImageID.tolist()


def test_awkward_files_are_skipped_and_counted(awkward):
    root, info = awkward
    report = LoadReport()
    df = load_train(root / 'data', report=report)
    assert report.skipped == {'hidden file': 1, 'unknown image name': 1}
    assert report.incomplete_persons == 1
    assert len(df) == 8 * 7 - 1            # the six-photo person is used as is
    assert not df.file.str.contains('/\\._').any() and not df.file.str.endswith('selfie.jpg').any()
    s = tiny_settings(root)
    cropped, stats = attach_crops(df, s.crop, s.paths.cache, progress=False)
    assert stats.skipped == {'unreadable image': 1}
    assert info.awkward['truncated'] not in set(cropped.file)
    assert len(cropped) == len(df) - 1


@pytest.mark.parametrize('case', ['grey', 'rgba', 'cmyk', 'exif_rotated'])
def test_odd_modes_are_converted_silently(awkward, case):
    _, info = awkward
    im = open_rgb(info.awkward[case])
    assert im.mode == 'RGB'
    assert im.size == (96, 128)     # EXIF rotation undone: portrait like every other photo


def test_exif_rotation_restores_the_drawn_face(awkward, tmp_path):
    _, info = awkward
    assert Image.open(info.awkward['exif_rotated']).size == (128, 96)      # stored on its side
    plain = make_dataset(tmp_path / 'plain', persons=8, eval_persons=2, seed=3)     # same photos, no awkward cases
    original = info.awkward['exif_rotated'].replace(str(info.root), str(plain.root))
    upright = np.asarray(open_rgb(info.awkward['exif_rotated']), dtype=float)
    diff = np.abs(upright - np.asarray(open_rgb(original), dtype=float)).mean()
    assert diff < 8          # only JPEG re-encoding differs


def _edit_csv(root, fn):
    p = root / 'data' / 'train' / 'train.csv'
    df = pd.read_csv(p, dtype=str)
    fn(df).to_csv(p, index=False)
    return p


@pytest.mark.parametrize('edit,match', [
    (lambda d: d.rename(columns={'age': 'Age'}), "missing column.*'age'"),
    (lambda d: d.drop(columns=['path']), "missing column.*'path'"),
    (lambda d: pd.concat([d, d.iloc[:1]]), 'duplicate id'),
    (lambda d: d.assign(age=d.age.where(d.index != 2, '130')), 'age .130. must be'),
    (lambda d: d.assign(age=d.age.where(d.index != 2, 'old')), "age 'old' must be"),
    (lambda d: d.assign(gender=d.gender.where(d.index != 1, 'unknown')), "gender 'unknown'"),
])
def test_bad_train_csv(synth_root, edit, match):
    p = _edit_csv(synth_root, edit)
    with pytest.raises(DataError, match=match) as e: load_train(synth_root / 'data')
    assert str(p) in str(e.value)


def test_missing_person_folder(synth_root):
    folder = pd.read_csv(synth_root / 'data' / 'train' / 'train.csv').path[3]
    shutil.rmtree(synth_root / 'data' / 'train' / 'images' / folder)
    with pytest.raises(DataError, match=f'{folder} is missing'): load_train(synth_root / 'data')


def test_missing_eval_image(synth_root):
    first = pd.read_csv(synth_root / 'data' / 'eval' / 'info.csv').ImageID[0]
    (synth_root / 'data' / 'eval' / 'images' / first).unlink()
    with pytest.raises(DataError, match=f'missing, first .*{first}'): load_eval(synth_root / 'data')


def test_info_without_image_id(synth_root):
    p = synth_root / 'data' / 'eval' / 'info.csv'
    pd.read_csv(p).rename(columns={'ImageID': 'id'}).to_csv(p, index=False)
    with pytest.raises(DataError, match="ImageID"): load_eval(synth_root / 'data')


def test_unreadable_eval_image_is_an_error(synth_root):
    ev = load_eval(synth_root / 'data')
    open(ev.file[0], 'wb').write(b'not a jpeg')
    s = tiny_settings(synth_root)
    with pytest.raises(DataError, match=ev.file[0]):
        attach_crops(ev.assign(split='eval'), s.crop, s.paths.cache, progress=False)


def test_corrections_are_applied_and_counted(synth_root):
    df0 = load_train(synth_root / 'data')
    p0, folder = df0.person[0], df0.folder[0]
    new_gender = 1 - int(df0.gender[0])
    corr = synth_root / 'corr.csv'
    pd.DataFrame({'key': [p0, f'{folder}/normal', p0],
                  'field': ['gender', 'mask', 'age'],
                  'value': [['male', 'female'][new_gender], 'incorrect', '61']}).to_csv(corr, index=False)
    report = LoadReport()
    df = load_train(synth_root / 'data', corr, report)
    mine = df[df.person == p0]
    assert (mine.gender == new_gender).all() and (mine.age == 61).all() and (mine.age_group == 2).all()
    assert mine.loc[mine.stem == 'normal', 'mask'].item() == 1
    assert (mine.label == mine['mask'] * 6 + mine.gender * 3 + 2).all()
    assert report.corrections == 7 + 1 + (7 if df0.age[0] != 61 else 0)


def test_unknown_correction_key(synth_root):
    corr = synth_root / 'corr.csv'
    corr.write_text('key,field,value\nnobody,gender,male\n')
    with pytest.raises(DataError, match=f"{corr}.*'nobody'"): load_train(synth_root / 'data', corr)


def test_a_duplicate_imageid_is_refused(synth_root):
    p = _info(synth_root)
    lines = p.read_text().splitlines()
    p.write_text('\n'.join([*lines, lines[1]]) + '\n')
    with pytest.raises(DataError,
                       match=f'row {len(lines) + 1}: ImageID .* listed twice'): load_eval(synth_root / 'data')


def test_an_imageid_climbing_out_of_eval_images_is_refused(synth_root):
    person = sorted((synth_root / 'data' / 'train' / 'images').iterdir())[0]
    photo = next(person.glob('mask1.*'))
    info = pd.read_csv(_info(synth_root), dtype=str)
    info.loc[0, 'ImageID'] = f'../../train/images/{person.name}/{photo.name}'
    info.to_csv(_info(synth_root), index=False)
    assert photo.is_file()       # inside the data folder, but not an eval photo
    with pytest.raises(DataError, match=r'row 2: .*leads outside .*eval.images'): load_eval(synth_root / 'data')


def test_linked_images_folder_is_fine_and_a_photo_linking_out_is_not(synth_root, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp('store')
    images = synth_root / 'data' / 'eval' / 'images'
    shutil.move(images, elsewhere / 'images')
    images.symlink_to(elsewhere / 'images')
    assert len(load_eval(synth_root / 'data'))               # the linked folder: fine
    first = sorted((elsewhere / 'images').iterdir())[0]
    shutil.move(first, elsewhere / first.name)
    first.symlink_to(elsewhere / first.name)                 # a photo linking out of it: not
    with pytest.raises(DataError, match=f'{first.name}.*leads outside'): load_eval(synth_root / 'data')
    train = synth_root / 'data' / 'train' / 'images'
    person = sorted(train.iterdir())[0]
    shutil.move(person, elsewhere / person.name)
    person.symlink_to(elsewhere / person.name)               # a person folder linking out of train/images
    with pytest.raises(DataError, match='leads outside'): load_train(synth_root / 'data')


def test_an_absolute_path_in_train_csv_is_refused(synth_root, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp('elsewhere')
    csv = synth_root / 'data' / 'train' / 'train.csv'
    df = pd.read_csv(csv, dtype=str)
    shutil.copytree(synth_root / 'data' / 'train' / 'images' / df.path[0], elsewhere / 'p')
    df.loc[0, 'path'] = str(elsewhere / 'p')
    df.to_csv(csv, index=False)
    with pytest.raises(DataError, match=r'row 2 .*leads outside .*train.images'): load_train(synth_root / 'data')


def test_symlinked_photo_out_of_the_folder_is_refused(synth_root, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp('elsewhere')
    photo = next(next((synth_root / 'data' / 'train' / 'images').iterdir()).glob('normal.*'))
    shutil.move(photo, elsewhere / photo.name)
    photo.symlink_to(elsewhere / photo.name)
    with pytest.raises(DataError, match=f'{photo.name} leads outside'): load_train(synth_root / 'data')


def test_an_eval_id_climbing_out_is_refused(synth_root):
    p = synth_root / 'data' / 'eval' / 'info.csv'
    info = pd.read_csv(p)
    info.loc[1, 'ImageID'] = '../../../elsewhere.jpg'
    info.to_csv(p, index=False)
    with pytest.raises(DataError, match='row 3'): load_eval(synth_root / 'data')


def test_two_photos_with_one_stem_are_refused(synth_root):
    "item 13: mask1.jpg and mask1.png would both be used as mask1."
    d = next((synth_root / 'data' / 'train' / 'images').iterdir())
    first = next(d.glob('mask1.*'))
    shutil.copy(first, d / ('mask1.jpeg' if first.suffix != '.jpeg' else 'mask1.png'))
    with pytest.raises(DataError, match='two photos named mask1'): load_train(synth_root / 'data')


def test_header_only_train_csv(synth_root):
    (synth_root / 'data' / 'train' / 'train.csv').write_text('id,gender,race,age,path\n')
    r = _cli('train', 'mask', '--data', synth_root / 'data', '--no-pretrained', cwd=synth_root)
    assert r.returncode == 2 and 'no persons' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_folder_or_a_vanished_photo_is_skipped_not_a_traceback(synth_root):
    "A folder named like a photo, and a photo deleted between listing and cropping."
    d = sorted((synth_root / 'data' / 'train' / 'images').iterdir())
    gone = next(d[1].glob('normal.*'))
    photo = next(d[0].glob('mask4.*'))
    photo.unlink()
    photo.mkdir()
    train = load_train(synth_root / 'data')
    assert str(photo) not in set(train.file)
    gone.unlink()
    s = tiny_settings(synth_root)
    out, st = crop_images(train.file.tolist(), s.crop, s.paths.cache, progress=False)
    assert str(gone) not in out and st.skipped['unreadable image'] == 1
    with pytest.raises(DataError, match=gone.name): crop_images([str(gone)], s.crop, s.paths.cache, strict=True)

