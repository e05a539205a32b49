"""Run folders listed and compared: `mcls runs` and `mcls runs --diff`."""
from mcls.train import train_task, training_table
from tests.conftest import tiny_settings


def test_runs_diff_names_what_changed_between_two_runs(synth_root):
    from mcls.runs import diff_runs
    s = tiny_settings(synth_root)
    table = training_table(s, progress=False)
    a = train_task(table, s, 'gender', None, progress=False).run_dir
    b = train_task(table, tiny_settings(synth_root, gender__lr='5e-3', train__wd='0.05'), 'gender', None,
                   progress=False).run_dir
    changed = dict((k, (x, y)) for k, x, y in diff_runs(a, b))
    assert changed['gender.lr'][1] == '5e-3' and changed['gender.wd'] == ('0.01', '0.05')
    assert 'mask.lr' not in changed and not any(k.startswith('paths.') for k in changed)
    assert diff_runs(a, a) == []


def test_runs_list_whole_numbers_beside_a_damaged_row(tmp_path):
    import json
    from mcls.runs import list_runs
    (tmp_path / 'a').mkdir()
    (tmp_path / 'a' / 'run.json').write_text(json.dumps({'task': 'joint', 'fold': 0, 'status': 'done', 'epochs': 6,
                                                         'valid_f1': 0.5}))
    (tmp_path / 'b').mkdir()
    (tmp_path / 'b' / 'run.json').write_text('{cut')
    df = list_runs(tmp_path)
    assert df.fold.iloc[0] == 0 and str(df.fold.dtype) == 'Int64' and str(df.epochs.iloc[0]) == '6'
    assert df.status.iloc[1] == 'damaged'
