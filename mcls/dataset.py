"""The competition layout -> one image table (one row per photo), with label corrections and a load report."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .csvs import read_csv
from .errors import DataError
from .images import IMAGE_EXTS, is_hidden
from .labels import GENDERS, MASK_STEMS, age_group, encode

__all__ = ['DataError', 'LoadReport', 'TRAIN_COLUMNS', 'inside', 'load_train', 'load_eval', 'load_images', 'train_rows',
           'read_corrections', 'apply_corrections']

log = logging.getLogger(__name__)
TRAIN_COLUMNS = ('id', 'gender', 'race', 'age', 'path')
AGE_RANGE = (0, 120)


@dataclass
class LoadReport:
    persons: int = 0
    images: int = 0
    eval_images: int = 0
    corrections: int = 0          # photos whose labels the corrections changed
    correction_rows: int = 0      # rows of the corrections file applied
    skipped: Counter = field(default_factory=Counter)        # reason -> count
    skipped_files: list[tuple[str, str]] = field(default_factory=list)   # (file, reason)
    incomplete_persons: int = 0
    crops: int = 0                # training photos with a crop (set by mcls.train.training_table)
    crop_fallbacks: int = 0       # of them, centre crops: the detector found no face

    def skip(self, path, reason: str):
        self.skipped[reason] += 1
        self.skipped_files.append((str(path), reason))
        log.info('skipped %s: %s', path, reason)     # counted in the load summary; named with -v


def inside(path: Path, folder: Path, what: str):
    """Every photo mcls reads lies inside the folder it belongs to (train/images, eval/images) once links are
    resolved on both sides: a linked images folder is fine; an absolute or `..` path in a CSV, or a photo linking
    out of its folder, is refused rather than followed."""
    real, top = Path(path).resolve(), Path(folder).resolve()
    if real != top and top not in real.parents:
        raise DataError(f'{what} leads outside {folder} (to {real}); copy the photo into {folder} and use a path '
                        f'relative to it')


def read_corrections(path: Path) -> pd.DataFrame:
    """Label corrections: CSV `key,field,value`. key is a person id (field gender or age) or an image
    `person_folder/stem` (field mask: wear|incorrect|not_wear or 0-2; or gender/age for that photo only)."""
    df = read_csv(path, ('key', 'field', 'value'), 'Write it as key,field,value (see README).')
    bad = df[~df.field.isin(['gender', 'age', 'mask'])]
    if len(bad):
        raise DataError(f'{path}: row {bad.index[0] + 2}: field {bad.field.iloc[0]!r} must be gender, age or mask')
    return df


def _parse_value(path, fld: str, value: str) -> int:
    from .labels import MASK_NAMES
    names = {'gender': GENDERS, 'mask': MASK_NAMES}.get(fld, ())
    v = value.strip().lower()
    if v in names: return names.index(v)
    try:
        n = int(float(v))
    except ValueError:
        raise DataError(f'{path}: {fld} value {value!r} is not valid') from None
    hi = {'gender': 1, 'mask': 2, 'age': AGE_RANGE[1]}[fld]
    if not 0 <= n <= hi: raise DataError(f'{path}: {fld} value {value!r} is out of range 0-{hi}')
    return n


def apply_corrections(df: pd.DataFrame, corrections: pd.DataFrame, source='corrections') -> int:
    "Apply corrections in place to an image table; returns how many rows changed. Unknown keys are an error."
    changed = 0
    image_key = df.folder + '/' + df.stem
    for _, row in corrections.iterrows():
        sel = (df.person == row.key) if row.key in set(df.person) else (image_key == row.key)
        if not sel.any():
            raise DataError(f'{source}: key {row.key!r} matches no person id and no image folder/stem; '
                            f'fix or remove that row')
        if row.field == 'mask' and (df.person == row.key).any():
            raise DataError(f'{source}: key {row.key!r}: a mask correction needs an image key (folder/stem)')
        value = _parse_value(source, row.field, row.value)
        changed += int((df.loc[sel, row.field] != value).sum())
        df.loc[sel, row.field] = value
    return changed


def _finish_labels(df: pd.DataFrame) -> pd.DataFrame:
    df['age_group'] = age_group(df.age.to_numpy())
    df['label'] = encode(df['mask'].to_numpy(), df.gender.to_numpy(), df.age_group.to_numpy())
    return df


def _read_train_csv(csv: Path) -> pd.DataFrame:
    "train.csv read and checked: one row per person with a unique id and folder, a gender and a whole-number age."
    meta = read_csv(csv, TRAIN_COLUMNS, 'Point --data at a folder in the competition layout.')
    if not len(meta): raise DataError(f'{csv}: no persons (a header and no rows); add one row per person')
    for c in TRAIN_COLUMNS: meta[c] = meta[c].str.strip()
    dup = meta.id[meta.id.duplicated()]
    if len(dup): raise DataError(f'{csv}: duplicate id(s) {sorted(set(dup))[:5]}: each person needs one row')
    dup = meta.path[meta.path.duplicated()]
    if len(dup): raise DataError(f'{csv}: duplicate path(s) {sorted(set(dup))[:5]}: each person needs a folder')
    bad_g = meta[~meta.gender.str.lower().isin(GENDERS)]
    if len(bad_g):
        raise DataError(f'{csv}: row {bad_g.index[0] + 2} (id {bad_g.id.iloc[0]}): gender {bad_g.gender.iloc[0]!r} '
                        f'must be male or female')
    ages = pd.to_numeric(meta.age, errors='coerce')
    bad_a = meta[ages.isna() | (ages < AGE_RANGE[0]) | (ages > AGE_RANGE[1]) | (ages % 1 != 0)]
    if len(bad_a):
        raise DataError(f'{csv}: row {bad_a.index[0] + 2} (id {bad_a.id.iloc[0]}): age {bad_a.age.iloc[0]!r} '
                        f'must be a whole number in {AGE_RANGE[0]}-{AGE_RANGE[1]}')
    return meta.assign(gender=meta.gender.str.lower(), age=ages.astype(int))


def _person_photos(d: Path, img_dir: Path, where: str, report: LoadReport) -> dict[str, Path]:
    "A person's photos by stem (mask1..mask5, incorrect_mask, normal): other files are skipped and counted."
    stems: dict[str, Path] = {}
    for f in sorted(d.iterdir()):
        if is_hidden(f): report.skip(f, 'hidden file'); continue
        if f.suffix.lower() not in IMAGE_EXTS or f.stem not in MASK_STEMS:
            report.skip(f, 'unknown image name'); continue
        if not f.is_file(): report.skip(f, 'not a regular file'); continue   # a folder or a pipe named mask1.jpg
        if f.stem in stems:
            raise DataError(f'{d}: two photos named {f.stem} ({stems[f.stem].name}, {f.name}); the stem names the '
                            f'mask state, so keep one and move the other out of the folder')
        inside(f, img_dir, f'{where}: photo {f.name}')
        stems[f.stem] = f
    if len(stems) != len(MASK_STEMS):
        report.incomplete_persons += 1
        log.warning('%s: %d photos instead of %d; using what is there', d, len(stems), len(MASK_STEMS))
    return stems


def load_train(root: Path | str, corrections: Path | str | None = None,
               report: LoadReport | None = None) -> pd.DataFrame:
    """`root/train/train.csv` + `root/train/images/{path}/` -> one row per photo with columns
    file, person, folder, stem, mask, gender, age, age_group (true groups, boundary 60), label, race."""
    root, report = Path(root), report if report is not None else LoadReport()
    csv, img_dir = root / 'train' / 'train.csv', root / 'train' / 'images'
    meta = _read_train_csv(csv)
    rows = []
    for i, p in enumerate(meta.itertuples(index=False)):
        d = img_dir / p.path
        inside(d, img_dir, f'{csv}: row {i + 2} (id {p.id}): path {p.path!r}')
        if not d.is_dir():
            raise DataError(f'{csv}: person {p.id}: folder {d} is missing. Restore it or remove the row.')
        for stem, f in _person_photos(d, img_dir, f'{csv}: person {p.id}', report).items():
            rows.append((str(f), p.id, p.path, stem, MASK_STEMS[stem], GENDERS.index(p.gender), p.age, p.race))
    df = pd.DataFrame(rows, columns=['file', 'person', 'folder', 'stem', 'mask', 'gender', 'age', 'race'])
    if corrections:
        fixes = read_corrections(Path(corrections))
        report.corrections, report.correction_rows = apply_corrections(df, fixes, str(corrections)), len(fixes)
        log.info('%s: %d fix(es) changed %d photo(s)', corrections, report.correction_rows, report.corrections)
    report.persons, report.images = len(meta), len(df)
    return _finish_labels(df)


def load_eval(root: Path | str, report: LoadReport | None = None) -> pd.DataFrame:
    "`root/eval/info.csv` + `root/eval/images/` -> rows in info.csv's order with columns image_id, file."
    root = Path(root)
    csv, img_dir = root / 'eval' / 'info.csv', root / 'eval' / 'images'
    info = read_csv(csv, ('ImageID',), 'It needs the header ImageID,ans.')
    if not len(info): raise DataError(f'{csv}: no rows (a header only); list one eval photo per row')
    ids = info.ImageID.str.strip()
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(f'{csv}: row {dup.index[0] + 2}: ImageID {dup.iloc[0]!r} is listed twice; a submission has '
                        f'one row per photo, so remove the repeated row')
    files = [img_dir / i for i in ids]
    for i, f in enumerate(files): inside(f, img_dir, f'{csv}: row {i + 2}: ImageID {ids[i]!r}')
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f'{csv}: {len(missing)} listed image(s) missing, first {missing[0]}. '
                        f'Restore them or remove their rows.')
    if report is not None: report.eval_images = len(files)
    return pd.DataFrame({'image_id': ids, 'file': [str(f) for f in files]})


def train_rows(df: pd.DataFrame) -> pd.DataFrame:
    "The training photos of an image table (all of it when it has no `split` column)."
    return df[df.split.eq('train')] if 'split' in df else df


def load_images(root: Path | str, corrections: Path | str | None = None,
                report: LoadReport | None = None) -> pd.DataFrame:
    "Train and eval photos in one table, `split` = train|eval; eval rows have no labels."
    report = report if report is not None else LoadReport()
    tr = load_train(root, corrections, report).assign(split='train')
    ev = load_eval(root, report).assign(split='eval')
    return pd.concat([tr, ev], ignore_index=True)
