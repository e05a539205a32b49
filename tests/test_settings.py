import os
from pathlib import Path

import pytest

from mcls.settings import PACKAGED, SettingsError, load_settings, parse_overrides
from tests.helpers import BAD_SETTINGS


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
    assert j.mode == "joint" and j.pipeline == "light_real" and j.old_weight == 3
    assert j.fit == "one_cycle" and j.lr == 3e-3
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


@pytest.mark.parametrize('key, value', [('joint.lr', 'inf'), ('train.lr', 'nan'), ('train.wd', '-inf'),
                                        ('joint.old_weight', '1e300'), ('joint.old_weight', 'inf'),
                                        ('joint.old_weight', '0.5'), ('predict.tta_beta', 'nan')])
def test_every_number_setting_is_finite_and_in_its_range(tmp_path, key, value):
    with pytest.raises(SettingsError, match='must be'):
        load_settings(overrides={key: value}, cwd=tmp_path)


# --- [train] applies to every learner unless the same or a later layer sets the learner's own key ---

@pytest.mark.parametrize('local, config, overrides, want, source', [
    ('[train]\nepochs = 9\n', None, {}, 9, 'settings.ini'),                    # beats the packaged [joint] value
    ('[train]\nepochs = 9\n[joint]\nepochs = 4\n', None, {}, 4, 'settings.ini'),   # same layer: the learner's wins
    ('[joint]\nepochs = 4\n', '[train]\nepochs = 9\n', {}, 9, 'cfg.ini'),      # a later layer's [train] wins
    ('[train]\nepochs = 9\n', '[joint]\nepochs = 4\n', {}, 4, 'cfg.ini'),
    (None, '[joint]\nepochs = 4\n', {'train.epochs': '2'}, 2, 'command line'),
    (None, '[train]\nepochs = 9\n', {'joint.epochs': '5', 'train.epochs': '2'}, 5, 'command line'),
])
def test_train_keys_apply_to_every_learner_by_layer_order(tmp_path, local, config, overrides, want, source):
    if local: (tmp_path / 'settings.ini').write_text(local)
    if config: (tmp_path / 'cfg.ini').write_text(config)
    s = load_settings(tmp_path / 'cfg.ini' if config else None, overrides, cwd=tmp_path)
    assert s.tasks['joint'].epochs == want and source in s.sources['joint.epochs']
    if 'train.epochs' in overrides or (config or '').startswith('[train]') and 'joint.epochs' not in overrides:
        assert {s.tasks[t].epochs for t in ('mask', 'age', 'gender')} == {int(overrides.get('train.epochs', 9))}


@pytest.mark.parametrize('key', ['lr', 'epochs', 'full_epochs', 'pipeline', 'photos_per_person'])
def test_set_train_takes_every_learner_key(tmp_path, key):
    value = {'lr': '1e-3', 'epochs': '2', 'full_epochs': '2', 'pipeline': 'light', 'photos_per_person': '2'}[key]
    s = load_settings(overrides={f'train.{key}': value}, cwd=tmp_path)
    assert {str(s.raw[t][key]) for t in ('mask', 'age', 'gender', 'joint')} == {value}


def test_a_saved_settings_file_resolves_to_the_same_values_alone(tmp_path):
    (tmp_path / 'cfg.ini').write_text('[train]\nepochs = 9\nlr = 2e-3\n')
    s = load_settings(tmp_path / 'cfg.ini', {'joint.batch': '8'}, cwd=tmp_path)
    (tmp_path / 'run.ini').write_text(s.to_ini())
    again = load_settings(tmp_path / 'run.ini', standalone=True, cwd=tmp_path)
    assert again.tasks == s.tasks and again.predict == s.predict


def test_a_run_of_an_older_layout_keeps_what_it_ran_with_not_todays_defaults(tmp_path):
    "a run folder written before photos_per_person existed trained on every photo; today's [joint] default is 3"
    s = load_settings(cwd=tmp_path)
    assert s.tasks['joint'].photos_per_person == '3'
    old = s.to_ini().replace('photos_per_person = 3\n', '').replace('photos_per_person = all\n', '')
    assert 'photos_per_person' not in old
    (tmp_path / 'settings.ini.run').write_text(old)
    assert load_settings(tmp_path / 'settings.ini.run', standalone=True,
                         cwd=tmp_path).tasks['joint'].photos_per_person == 'all'


def test_an_older_run_lacking_a_required_key_is_refused_in_one_line(tmp_path):
    s = load_settings(cwd=tmp_path)
    (tmp_path / 'run.ini').write_text(s.to_ini().replace('pipeline = light_real\n', ''))
    with pytest.raises(SettingsError, match=r'\[joint\] pipeline is missing'):
        load_settings(tmp_path / 'run.ini', standalone=True, cwd=tmp_path)


@pytest.mark.parametrize('make', ['folder', 'fifo'])
def test_a_settings_path_that_is_not_a_file_is_one_line(tmp_path, make):
    p = tmp_path / 'settings.ini'
    p.mkdir() if make == 'folder' else os.mkfifo(p)
    with pytest.raises(SettingsError, match='settings.ini: (a folder|not a regular file)'):
        load_settings(cwd=tmp_path)
    with pytest.raises(SettingsError, match='settings.ini: (a folder|not a regular file)'):
        load_settings(p, cwd=tmp_path / '..')


def test_a_byte_order_mark_is_read_as_text(tmp_path):
    (tmp_path / 'settings.ini').write_bytes(b'\xef\xbb\xbf[joint]\nepochs = 4\n')
    assert load_settings(cwd=tmp_path).tasks['joint'].epochs == 4


@pytest.mark.parametrize('section,key,value,match', BAD_SETTINGS)
def test_a_settings_file_is_checked_like_set(tmp_path, section, key, value, match):
    (tmp_path / 'settings.ini').write_text(f'[{section}]\n{key} = {value}\n')
    with pytest.raises(SettingsError, match=match) as e: load_settings(cwd=tmp_path)
    assert 'settings.ini' in str(e.value)
    if match != 'unknown section':
        with pytest.raises(SettingsError, match=match): load_settings(overrides={f'{section}.{key}': value})


def test_undecodable_settings_bytes_are_one_line(tmp_path):
    (tmp_path / 'settings.ini').write_bytes(b'[crop]\nsize = \xff\xfe64\n')
    with pytest.raises(SettingsError, match='not UTF-8'): load_settings(cwd=tmp_path)


def test_reproducible_is_a_setting_and_off_by_default(tmp_path):
    from mcls.settings import load_settings
    assert load_settings(cwd=tmp_path).tasks['joint'].reproducible is False
    assert load_settings(overrides={'train.reproducible': 'true'}, cwd=tmp_path).tasks['age'].reproducible is True

