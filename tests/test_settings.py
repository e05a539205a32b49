from pathlib import Path

import pytest

from mcls.settings import PACKAGED, SettingsError, load_settings, parse_overrides


def test_the_seed_config_carries_the_seed_values(tmp_path):
    s = load_settings(Path(__file__).parents[1] / 'configs' / 'seed.ini', cwd=tmp_path)
    assert (s.tasks['mask'].lr, s.tasks['age'].lr, s.tasks['gender'].lr) == (3e-4, 1e-4, 1e-4)
    assert (s.tasks['mask'].epochs, s.tasks['age'].epochs, s.tasks['gender'].epochs) == (10, 4, 10)
    assert (s.tasks['mask'].loss, s.tasks['age'].loss, s.tasks['gender'].loss) == ('ce', 'focal', 'ce')
    assert all(s.tasks[t].batch == 64 and s.tasks[t].size == 224 and s.tasks[t].arch == 'efficientnet_b3'
               for t in ('mask', 'age', 'gender'))
    assert s.tasks['age'].boundary == 58 and s.tasks['mask'].mode == 'tasks'


def test_packaged_defaults_are_the_protocols_winners(tmp_path):
    s = load_settings(cwd=tmp_path)
    j = s.tasks['joint']
    assert j.mode == "joint" and j.pipeline == "light_real" and j.old_weight == 3 and j.fit == "one_cycle" and j.lr == 3e-3
    assert all(t.seed == 777 and t.arch == 'efficientnet_b3' and t.boundary == 60 for t in s.tasks.values())
    assert s.sources['joint.lr'] == 'packaged defaults'


def test_layers_and_sources(tmp_path):
    (tmp_path / 'settings.ini').write_text('[mask]\nlr = 1e-3\n[train]\nbatch = 8\n')
    other = tmp_path / 'other.ini'
    other.write_text('[age]\nboundary = 58\n')
    s = load_settings(other, {'gender.epochs': '7', 'crop.size': '128'}, cwd=tmp_path)
    assert s.tasks['mask'].lr == 1e-3 and s.sources['mask.lr'] == str(tmp_path / 'settings.ini')
    assert all(t.batch == 8 for t in s.tasks.values())       # [train] is inherited by every task
    assert s.tasks['age'].boundary == 58 and s.sources['age.boundary'] == str(other)
    assert s.tasks['gender'].epochs == 7 and s.sources['gender.epochs'] == 'command line'
    assert s.crop.size == 128
    packaged = load_settings(cwd=tmp_path / 'nowhere')
    assert s.tasks['mask'].epochs == packaged.tasks['mask'].epochs and s.sources['mask.epochs'] == 'packaged defaults'


def test_task_override_of_a_train_key(tmp_path):
    s = load_settings(overrides={'age.arch': 'resnet18'}, cwd=tmp_path)
    assert s.tasks['age'].arch == 'resnet18' and s.tasks['mask'].arch == 'efficientnet_b3'


@pytest.mark.parametrize('overrides,match', [
    ({'mask.lr': 'fast'}, r'\[mask\] lr'),
    ({'train.pretrained': 'maybe'}, 'pretrained'),
    ({'mask.colour': 'red'}, 'unknown setting'),
    ({'split.by': 'family'}, 'person'),
])
def test_bad_values_name_the_setting(tmp_path, overrides, match):
    with pytest.raises(SettingsError, match=match): load_settings(overrides=overrides, cwd=tmp_path)


def test_missing_config_file(tmp_path):
    with pytest.raises(SettingsError, match='no such file'): load_settings(tmp_path / 'nope.ini', cwd=tmp_path)


def test_parse_overrides():
    assert parse_overrides(['mask.lr=1e-4', 'paths.data = /x ']) == {'mask.lr': '1e-4', 'paths.data': '/x'}
    with pytest.raises(SettingsError, match='section.key=value'): parse_overrides(['lr=1'])


def test_resolved_settings_round_trip(tmp_path):
    s = load_settings(overrides={'mask.lr': '5e-4'}, cwd=tmp_path)
    f = tmp_path / 'resolved.ini'
    f.write_text(s.to_ini())
    again = load_settings(f, cwd=tmp_path)
    assert again.tasks == s.tasks and again.crop == s.crop


def test_packaged_file_is_the_project_settings():
    assert PACKAGED.exists()
    assert Path(__file__).parents[1].joinpath('settings.ini').read_text() == PACKAGED.read_text()


@pytest.mark.parametrize('where, text, hint', [
    ('set', 'joint.epoch=3', 'did you mean joint.epochs?'),
    ('set', 'jiont.lr=1e-3', 'did you mean joint.lr?'),
    ('set', 'joint.loss=focall', 'did you mean focal?'),
    ('file', '[trian]\nlr = 1\n', 'did you mean train?'),
    ('file', '[train]\nepcohs = 1\n', 'did you mean epochs?'),
    ('file', '[predict]\nengine = onxx\n', 'did you mean onnx?'),
])
def test_a_near_miss_names_the_nearest_valid_name(tmp_path, where, text, hint):
    with pytest.raises(SettingsError) as e:
        if where == 'set': load_settings(overrides=parse_overrides([text]), cwd=tmp_path)
        else:
            (tmp_path / 'c.ini').write_text(text)
            load_settings(tmp_path / 'c.ini', cwd=tmp_path)
    assert hint in str(e.value)


def test_a_far_miss_gets_no_guess(tmp_path):
    with pytest.raises(SettingsError) as e: load_settings(overrides={'joint.zzzzzz': '1'}, cwd=tmp_path)
    assert 'did you mean' not in str(e.value)
