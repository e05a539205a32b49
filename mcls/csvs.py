"""Every CSV mcls reads goes through `read_csv`: a file that is not what it should be is one DataError naming the
file, the row and the fix, never a traceback or a silently shifted column."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from .errors import DataError

__all__ = ['read_csv']


def read_csv(path: Path | str, columns, fix: str) -> pd.DataFrame:
    """`path` as a table of strings (column names stripped, a UTF-8 BOM dropped, blank lines skipped), with at
    least `columns`. Every row must have as many fields as the header: pandas would otherwise take an extra field
    on every row as an index and shift each column by one. `fix` ends every message."""
    path = Path(path)
    if not path.is_file(): raise DataError(f'{path}: not found{" (a folder)" if path.is_dir() else ""}. {fix}')
    try:
        text = path.read_bytes().decode('utf-8-sig')
    except UnicodeDecodeError as e:
        raise DataError(f'{path}: not UTF-8 text (byte {e.start}: {e.reason}). {fix}') from None
    reader = csv.reader(io.StringIO(text, newline=''))
    try:
        rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    except csv.Error as e:
        raise DataError(f'{path}: line {reader.line_num}: not a readable CSV ({e}). {fix}') from None
    if not rows: raise DataError(f'{path}: empty (not even a header). {fix}')
    header = [c.strip() for c in rows[0][1]]
    for line, r in rows[1:]:
        if len(r) != len(header):
            raise DataError(f'{path}: line {line} has {len(r)} field(s) where the header has {len(header)} '
                            f'({",".join(header)}). {fix}')
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f'{path}: missing column(s) {missing}; found {header}. The file needs the header '
                        f'{",".join(columns)}.')
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup: raise DataError(f'{path}: column(s) {dup} appear twice in the header. {fix}')
    return pd.DataFrame([r for _, r in rows[1:]], columns=header, dtype=str)
