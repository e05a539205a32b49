"""Tests of mcls.pseudo."""
import numpy as np
import pandas as pd
import pytest

from mcls.errors import DataError
from tests.conftest import tiny_settings


def test_pseudo_labels_from_another_eval_set_are_refused(synth_root):
    from mcls.pseudo import add_pseudo
    s = tiny_settings(synth_root)
    probs = {t: np.full((2, n), 1.0 / n) for t, n in (('mask', 3), ('gender', 2), ('age', 3))}
    np.savez(synth_root / 'other.probs.npz', image_ids=np.array(['x1.jpg', 'x2.jpg']), **probs)
    with pytest.raises(DataError, match=r"other eval photos .*first 'x1.jpg'"):
        add_pseudo(pd.DataFrame(), s, synth_root / 'other.probs.npz', 0.9)

