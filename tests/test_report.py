"""What a run leaves to look at: curves, a confusion matrix and a report of what differs from the defaults."""
import re

from PIL import Image

from mcls.report import changed_settings, read_history
from mcls.train import train_task, training_table
from tests.conftest import tiny_settings


def test_every_run_draws_its_curves_and_reports_its_validation_fold(synth_root):
    s = tiny_settings(synth_root, joint__epochs=2, joint__lr='2e-3')
    r = train_task(training_table(s, progress=False), s, 'joint', 0, progress=False)
    for png in ('curves.png', 'confusion.png'):
        assert Image.open(r.run_dir / png).size[0] > 300
    report = (r.run_dir / 'report.md').read_text()
    hist = read_history(r.run_dir)
    best = hist.loc[hist.f1_score.idxmax()]
    assert f'Best epoch: {int(best.epoch)} of 2 (validation F1 {best.f1_score:.4f})' in report
    assert '| joint.lr | 2e-3 | 3e-3 |' in report and '| joint.epochs | 2 | 6 |' in report
    rows = re.findall(r'^\| \d+ \| \S+ \| (\d\.\d+) \| (\d+) \|$', report, re.M)
    assert len(rows) == 18                                          # one row per class, absent classes too
    table = training_table(s, progress=False)
    assert sum(int(n) for _, n in rows) == (table.fold == 0).sum()    # every validation photo, once
    f1_18 = float(re.search(r'18-class macro F1 (\d\.\d+)', report).group(1))
    assert abs(f1_18 - sum(float(f) for f, _ in rows) / 18) < 1e-3   # the competition's mean over the 18 classes


def test_a_full_run_plots_what_it_measured(synth_root):
    s = tiny_settings(synth_root)
    r = train_task(training_table(s, progress=False), s, 'gender', None, progress=False)
    assert (r.run_dir / 'curves.png').exists() and not (r.run_dir / 'confusion.png').exists()
    assert 'no validation fold' in (r.run_dir / 'report.md').read_text()
    assert read_history(r.run_dir).valid_loss.isna().all()


def test_changed_settings_lists_only_what_differs(tmp_path):
    from mcls.settings import load_settings
    s = load_settings(overrides={'joint.size': '96', 'paths.runs': 'elsewhere'}, cwd=tmp_path)
    assert {k for k, _, _ in changed_settings(s, 'joint')} == {'joint.size', 'paths.runs'}
