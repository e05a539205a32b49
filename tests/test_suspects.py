import numpy as np
import pandas as pd
import pytest

from mcls.dataset import LoadReport, load_train
from mcls.labels import age_group
from mcls.pseudo import GROUP_YEARS
from mcls.suspects import accept_suspects, oof_probs, rank_suspects, suspect_table
from tests.helpers import _dead_pid


def confident(labels, k, p=0.9, seed=0):
    "Probabilities that agree with `labels` at about p, with a little noise."
    g = np.random.default_rng(seed)
    probs = np.full((len(labels), k), (1 - p) / (k - 1)) + g.uniform(0, 0.02, (len(labels), k))
    probs[np.arange(len(labels)), labels] = p
    return probs / probs.sum(1, keepdims=True)


def test_a_flipped_label_ranks_first():
    labels = np.repeat([0, 1], 20)
    probs = confident(labels, 2)
    given = labels.copy()
    given[7] = 1                                   # the model says 0, the label says 1
    scores, best = rank_suspects(given, probs)
    assert scores.argmin() == 7 and best[7] == 0


def fake_table(n_persons=6):
    rows = []
    for p in range(n_persons):
        for stem, mask in (('mask1', 0), ('mask2', 0), ('mask3', 0), ('mask4', 0), ('mask5', 0),
                           ('incorrect_mask', 1), ('normal', 2)):
            rows.append({'file': f'/x/{p}/{stem}.jpg', 'person': f'{p:06d}', 'folder': f'{p:06d}_f', 'stem': stem,
                         'mask': mask, 'gender': p % 2, 'age': 20 + 10 * p, 'crop': f'/c/{p}/{stem}.jpg'})
    df = pd.DataFrame(rows)
    df['age_group'] = age_group(df.age.to_numpy())
    return df


@pytest.mark.parametrize('task', ['gender', 'age', 'mask'])
def test_the_injected_error_tops_the_table_in_the_corrections_key_format(task):
    table = fake_table()
    col = {'mask': 'mask', 'gender': 'gender', 'age': 'age_group'}[task]
    oof = pd.DataFrame({'file': table.file, 'probs': list(confident(table[col].to_numpy(),
                                                                    2 if task == 'gender' else 3))})
    wrong = table.copy()
    if task == 'mask': wrong.loc[wrong.file == '/x/3/mask2.jpg', 'mask'] = 1
    elif task == 'gender': wrong.loc[wrong.person == '000003', 'gender'] = 1 - wrong.loc[wrong.person == '000003',
                                                                                         'gender']
    else: wrong.loc[wrong.person == '000003', 'age_group'] = 0       # truly 50: 30-59
    sus = suspect_table(wrong, oof, task)
    assert len(sus) == (len(table) if task == 'mask' else 6)          # the ranking is complete
    top = sus.iloc[0]
    assert top.key == ('000003_f/mask2' if task == 'mask' else '000003') and top.given != top.suggested
    if task == 'age': assert int(top.value) == GROUP_YEARS[1] and age_group(int(top.value)) == 1
    if task == 'gender': assert top.value in ('male', 'female')
    assert sus.score.is_monotonic_increasing


def test_accept_is_idempotent_and_the_data_layer_reads_it_back(trained, tmp_path):
    s = trained['settings']
    table = load_train(s.paths.data)
    person = table.person.iloc[0]
    given = table[table.person == person].gender.iloc[0]
    sus = pd.DataFrame({'key': [person, f'{table.folder.iloc[0]}/mask1', 'x'], 'field': ['gender', 'mask', 'gender'],
                        'given': ['a', 'wear', 'same'], 'suggested': ['b', 'incorrect', 'same'],
                        'value': [('female', 'male')[given], 'incorrect', 'male'], 'score': [0.1, 0.2, 0.9],
                        'crop': ['', '', '']})
    corr = tmp_path / 'corrections.csv'
    assert accept_suspects(sus, corr, 2) == 2
    first = corr.read_text()
    assert accept_suspects(sus, corr, 2) == 2 and corr.read_text() == first      # twice: the same file
    assert accept_suspects(sus, corr) == 2 and len(pd.read_csv(corr)) == 2       # agreeing rows are never written
    report = LoadReport()
    fixed = load_train(s.paths.data, corr, report)
    assert report.correction_rows == 2 and report.corrections == 7 + 1           # one person's 7 photos, one mask
    assert (fixed[fixed.person == person].gender != given).all()


def test_suspects_command_writes_ranking_sheet_and_corrections(trained, tmp_path):
    from tests.test_cli import cli
    s = trained['settings']
    corr = tmp_path / 'fixes.csv'
    args = ['suspects', 'all', '--models', trained['models'], '--accept', '3', '--set', f'paths.corrections={corr}',
            '--set', f'paths.reports={tmp_path}']
    for k in ('data', 'cache', 'runs', 'models'): args += ['--set', f'paths.{k}={getattr(s.paths, k)}']
    for k, v in (('crop.size', s.crop.size),): args += ['--set', f'{k}={v}']
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    for t in ('mask', 'gender', 'age'):
        sus = pd.read_csv(tmp_path / f'suspects_{t}.csv')
        assert len(sus) > 0 and (tmp_path / f'suspects_{t}.png').stat().st_size > 0
    n_valid = int((trained['table'].fold == 0).sum())
    assert len(pd.read_csv(tmp_path / 'suspects_mask.csv')) == n_valid
    assert 0 < len(pd.read_csv(corr)) <= 9
    with pytest.raises(Exception, match='two model folders'):
        oof_probs([trained['models'], trained['models']], 'mask')


def test_a_stray_temporary_of_a_killed_accept_is_cleaned(tmp_path):
    from mcls.suspects import accept_suspects
    stray = tmp_path / f'.fixes.csv.{_dead_pid()}.tmp'
    stray.write_text('half')
    sus = pd.DataFrame({'key': ['p1'], 'field': ['gender'], 'given': ['male'], 'suggested': ['female'],
                        'value': ['female']})
    assert accept_suspects(sus, tmp_path / 'fixes.csv') == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ['fixes.csv']

