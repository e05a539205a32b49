"""Fault injection and bad input, with tests that drive several members of each class of defect: launched jobs die
with their launcher, files are checked before use, statistics refuse what they cannot resample, outputs are checked
writable before the work, bookkeeping never stops the work."""
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mcls.errors import DataError, UserError, WriteError
from tests.conftest import needs_onnx_provider
from tests.test_faults import one_line_error
from tests.test_reliability import _cli

ROOT = Path(__file__).resolve().parents[1]
TASK_SHAPES = {'mask': 3, 'gender': 2, 'age': 3}
READ_ONLY = Path('/sys')      # a folder no one, root included, can add files to (sysfs)
needs_read_only = pytest.mark.skipif(not READ_ONLY.is_dir(), reason='no /sys here to stand for a read-only folder')


def _valid_folder(folder: Path, n: int = 12, persons: int = 4, seed: int = 0, **bad) -> Path:
    "A run folder's three <task>.valid.npz files for `n` photos of `persons` persons; `bad` replaces arrays: task__key."
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = np.array([f'/d/train/images/p{i % persons}/mask{i}.jpg' for i in range(n)])
    labels = np.random.default_rng(99).integers(0, 18, n)     # the same photos whatever the seed
    for t, k in TASK_SHAPES.items():
        z = {'files': files, 'labels': labels, 'probs': rng.dirichlet(np.ones(k), n)}
        z.update({key.split('__')[1]: v for key, v in bad.items() if key.startswith(f'{t}__')})
        np.savez(folder / f'{t}.valid.npz', **z)
    return folder


# --- 1: torch's own words for a short write ---

@pytest.mark.cli
def test_a_checkpoint_write_under_a_file_size_limit_is_one_write_error(tmp_path):
    """torch's zip writer under RLIMIT_FSIZE says 'unexpected pos N vs M' (from 'iostream error'): a WriteError, no
    temporary"""
    code = ('import resource, sys, torch\n'
            'from mcls.atomic import atomic_path\n'
            'from mcls.errors import WriteError\n'
            'resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n'
            'try:\n'
            '    with atomic_path(sys.argv[1]) as tmp: torch.save({"w": torch.zeros(1_000_000)}, tmp)\n'
            'except WriteError as e: print("WriteError:", e)\n')
    r = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'last-0.pth')], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.stdout.startswith('WriteError:') and 'last-0.pth' in r.stdout and 'free disk space' in r.stdout, r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('error', [
    RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534'),
    RuntimeError('basic_ios::clear: iostream error'),
    OSError(28, 'No space left on device'),
    OSError(27, 'File too large'),
    'wrapped',
])
def test_storage_errors_are_recognised_by_kind_whatever_the_wording(error):
    from mcls.atomic import is_storage_error
    if error == 'wrapped':     # a library's own error raised from the OSError that caused it
        try:
            try:
                raise OSError(122, 'Disk quota exceeded')
            except OSError as cause:
                raise RuntimeError('serialisation failed') from cause
        except RuntimeError as e:
            error = e
    assert is_storage_error(error)
    assert not is_storage_error(RuntimeError('CUDA error: device-side assert triggered'))
    assert not is_storage_error(OSError(2, 'No such file or directory'))


# --- 2, 3, 4, 5: compare ---

def _submission(path: Path, ids, ans):
    pd.DataFrame({'ImageID': ids, 'ans': ans}).to_csv(path, index=False)
    return path


@pytest.mark.cli
def test_compare_with_zero_photos_is_one_error(tmp_path):
    for name in ('a.csv', 'b.csv', 'answers.csv'): _submission(tmp_path / name, [], [])
    r = _cli('compare', 'a.csv', 'b.csv', '--answers', 'answers.csv', cwd=tmp_path)
    one_line_error(r, 'no photos to compare')
    from mcls.compare import compare, read_side
    a, b = (_valid_folder(tmp_path / x, n=0) for x in 'ab')
    with pytest.raises(DataError, match='no photos'): compare(read_side([a]), read_side([b]))


@pytest.mark.parametrize('bad, words', [
    ({'age__probs': np.full((12, 3), np.nan)}, 'age probability nan'),
    ({'mask__probs': -np.ones((12, 3))}, 'mask probability -1.0'),
    ({'gender__probs': np.ones((12, 1))}, r'gender probabilities of shape \(12, 1\)'),
    ({'mask__probs': np.full((12, 6), 1 / 6)}, r'mask probabilities of shape \(12, 6\)'),
    ({'mask__labels': np.full(12, 25)}, 'label 25 is not a class 0-17'),
    ({'age__probs': np.full((5, 3), 1 / 3)}, r'not \(12, 3\)'),
])
def test_compare_checks_what_it_reads(tmp_path, bad, words):
    from mcls.compare import read_side
    folder = _valid_folder(tmp_path / 'run', **bad)
    with pytest.raises(DataError, match=words): read_side([folder])


@pytest.mark.cli
def test_a_nan_probability_is_refused_before_any_table_or_plot(tmp_path):
    good, bad = _valid_folder(tmp_path / 'good'), _valid_folder(tmp_path / 'bad', age__probs=np.full((12, 3), np.nan))
    r = _cli('compare', good, bad, '--set', f'paths.reports={tmp_path / "reports"}', cwd=tmp_path)
    one_line_error(r, 'age.valid.npz', 'nan')
    assert 'B - A' not in r.stdout and not (tmp_path / 'reports').exists()


def test_probabilities_beside_a_submission_are_checked_too(tmp_path):
    from mcls.submission import read_submission_probs, write_submission
    sub = pd.DataFrame({'ImageID': ['a.jpg', 'b.jpg'], 'ans': [0, 1]})
    write_submission(sub, {'mask': np.full((2, 3), 1 / 3), 'gender': np.full((2, 3), 1 / 3), 'age': np.full((2, 3),
                                                                                                            1 / 3)},
                     tmp_path / 's.csv')
    with pytest.raises(DataError, match=r'gender probabilities of shape \(2, 3\)'):
        read_submission_probs(tmp_path / 's.csv', ('mask', 'gender', 'age'), '')


def _persons_case(tmp_path, rows: str):
    ids = [f'{i}.jpg' for i in range(6)]
    for name, ans in (('a.csv', [0] * 6), ('b.csv', [0, 1, 0, 1, 0, 1]), ('answers.csv', [0] * 6)):
        _submission(tmp_path / name, ids, ans)
    (tmp_path / 'meta.csv').write_text('file,split,id\n' + rows)
    return _cli('compare', 'a.csv', 'b.csv', '--answers', 'answers.csv', '--persons-map', 'meta.csv',
                '--set', f'paths.reports={tmp_path / "reports"}', cwd=tmp_path)


@pytest.mark.cli
def test_a_persons_map_with_empty_ids_is_refused(tmp_path):
    r = _persons_case(tmp_path, ''.join(f'eval/images/{i}.jpg,eval,\n' for i in range(6)))
    one_line_error(r, 'meta.csv', 'row 2 has no person id')


@pytest.mark.cli
def test_a_photo_given_two_persons_is_refused(tmp_path):
    rows = ''.join(f'eval/images/{i}.jpg,eval,p{i // 2}\n' for i in range(6)) + 'eval/images/0.jpg,eval,p9\n'
    one_line_error(_persons_case(tmp_path, rows), 'photo 0.jpg is given two persons')


@pytest.mark.cli
def test_one_person_cannot_be_resampled(tmp_path):
    one_line_error(_persons_case(tmp_path, ''.join(f'eval/images/{i}.jpg,eval,p0\n' for i in range(6))),
                   'one unit', 'at least two persons')


@pytest.mark.cli
def test_a_person_listed_on_several_rows_is_still_one_person(tmp_path):
    rows = ''.join(f'eval/images/{i}.jpg,eval,p{i // 2}\n' for i in range(6)) + 'eval/images/0.jpg,eval,p0\n'
    r = _persons_case(tmp_path, rows)
    assert r.returncode == 0 and 'over 3 persons' in r.stdout, r.stderr


@pytest.mark.cli
def test_draws_are_bounded_and_refused_at_once_beyond(tmp_path):
    "refused before anything is read or drawn: with sides that do not exist, the error is still the draws'"
    r = _cli('compare', tmp_path / 'no_a', tmp_path / 'no_b', '--draws', '100000000', cwd=tmp_path)
    one_line_error(r, '--draws 100000000', '100,000')
    assert 'no such' not in r.stderr and not (tmp_path / 'reports').exists()


def test_draws_in_chunks_give_the_one_chunk_result(tmp_path, monkeypatch):
    "memory is bounded by computing draws in chunks; the chunking does not change the statistics"
    import mcls.compare as C
    sides = [C.read_side([_valid_folder(tmp_path / x, n=60, persons=20, seed=k)]) for k, x in enumerate('ab')]
    whole = C.compare(*sides, draws=3000)
    monkeypatch.setattr(C, 'CHUNK_CELLS', 20 * 7)          # chunks of 7 draws
    chunked = C.compare(*sides, draws=3000)
    for m, v in whole['metrics'].items():
        w = chunked['metrics'][m]
        assert (w['a'], w['b'], w['diff']) == (v['a'], v['b'], v['diff'])
        assert abs(w['low'] - v['low']) < 0.05 and abs(w['high'] - v['high']) < 0.05
    assert len(chunked['differences']['f1_18']) == 3000


# --- 6, 7: a launched job dies with its launcher ---

def _children(pid: int) -> list[int]:
    "The child pids of `pid` (Linux /proc)."
    out = []
    for task in Path(f'/proc/{pid}/task').glob('*/children'):
        out += [int(c) for c in task.read_text().split()]
    return out


def _gone(pids, within: float) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not any(Path(f'/proc/{p}').exists() and 'Z' not in Path(f'/proc/{p}/stat').read_text().split()[2:3]
                   for p in pids):
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope='module')
def tiny_ranks(tmp_path_factory):
    from mcls.demo import tiny_overrides
    from mcls.settings import LEARNERS, load_settings
    from mcls.synth import make_dataset
    root = tmp_path_factory.mktemp('launch')
    make_dataset(root / 'data', persons=15, eval_persons=3, seed=1)
    ov = tiny_overrides(root, 30, **{'train.workers': 0, 'split.folds': 3,
                                     **{f'{t}.fit': 'one_cycle' for t in LEARNERS}})
    (root / 'tiny.ini').write_text(load_settings(overrides=ov).to_ini())
    return root


@pytest.mark.cli
@pytest.mark.skipif(not Path('/proc/self/task').is_dir(), reason='finds the ranks through /proc')
@pytest.mark.parametrize('how', [signal.SIGTERM, signal.SIGKILL])
def test_ranks_die_with_their_launcher_and_export_nothing(tiny_ranks, how):
    "7 too: a global option (-v) before the command, the documented form, starts the ranks"
    runs, models = f'runs-{how.name}', tiny_ranks / f'models-{how.name}'
    p = subprocess.Popen([sys.executable, '-m', 'mcls', '-v', 'train', 'joint', '--config', 'tiny.ini', '--processes',
                          '2',
                          '--set', f'paths.runs={runs}', '--export-dir', str(models)], cwd=tiny_ranks,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, 'CUDA_VISIBLE_DEVICES': ''})      # gloo ranks on any machine
    try:
        end = time.monotonic() + 240
        while not list((tiny_ranks / runs).glob('*/history.csv')) and time.monotonic() < end:   # an epoch done
            assert p.poll() is None, p.stderr.read()
            time.sleep(0.2)
        ranks = _children(p.pid)
        assert len(ranks) == 2
        p.send_signal(how)
        p.wait(timeout=60)
        assert _gone(ranks, 30), 'a rank outlived its launcher'
    finally:
        if p.poll() is None: p.kill()
    if how == signal.SIGTERM: assert p.returncode == 128 + how and 'interrupted (SIGTERM)' in p.stderr.read()
    time.sleep(1)
    assert not models.exists()
    from mcls.runs import run_status
    (run,) = [r.parent for r in (tiny_ranks / runs).glob('*/run.json')]
    assert run_status(run) == 'interrupted'


def test_a_global_option_before_the_command_is_the_command_line(monkeypatch):
    from mcls import cli
    monkeypatch.setattr(sys, 'argv', ['mcls', '-v', 'train', 'joint', '--processes', '2'])
    cli._join_ranks('train', 2)          # accepted: the ranks run this command line
    monkeypatch.setattr(sys, 'argv', ['pytest', 'tests'])
    with pytest.raises(UserError, match='needs the command line'): cli._join_ranks('train', 2)


@pytest.mark.cli
def test_resume_with_processes_and_no_run_is_refused_before_the_ranks(tmp_path):
    r = _cli('train', 'mask', '--resume', '--processes', '2', '--set', f'paths.runs={tmp_path / "runs"}', cwd=tmp_path)
    one_line_error(r, 'no run of mask', 'nothing to resume')
    assert 'rank' not in r.stderr            # the launcher's own refusal, not a rank's error relayed


# --- 8, 9: ONNX graphs checked before use ---

@pytest.fixture(scope='module')
def onnx_folder(trained, tmp_path_factory):
    import shutil
    from mcls.onnx_engine import export_onnx
    d = tmp_path_factory.mktemp('onnx3') / 'fold0'
    shutil.copytree(trained['models'], d)
    export_onnx(d)
    return d


@needs_onnx_provider
def test_a_truncated_graph_is_refused_naming_the_fix(onnx_folder, tmp_path):
    import shutil
    from mcls.onnx_engine import OnnxModel, onnx_path
    d = tmp_path / 'fold0'
    shutil.copytree(onnx_folder, d)
    data = onnx_path(d, 'mask').read_bytes()
    onnx_path(d, 'mask').write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=r'mask\.onnx: not a whole ONNX graph.*export-onnx'): OnnxModel(d, 'mask')
    onnx_path(d, 'age').write_bytes(b'')
    with pytest.raises(DataError, match=r'age\.onnx: not a whole ONNX graph'): OnnxModel(d, 'age')


@needs_onnx_provider
def test_a_graph_with_altered_weights_is_refused(onnx_folder, tmp_path):
    import shutil
    import onnx
    from onnx import numpy_helper
    from mcls.onnx_engine import OnnxModel, onnx_path
    d = tmp_path / 'fold0'
    shutil.copytree(onnx_folder, d)
    OnnxModel(d, 'gender')                              # intact: taken
    m = onnx.load(str(onnx_path(d, 'gender')))
    init = max(m.graph.initializer, key=lambda t: np.prod(t.dims))
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 0.5                                    # one weight changed, the metadata left as it was
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(m, str(onnx_path(d, 'gender')))
    with pytest.raises(DataError, match=r'gender\.onnx: changed since `mcls export-onnx` wrote it'): OnnxModel(d,
                                                                                                               'gender')


# --- 10: persons auto that cannot group says so ---

def test_persons_auto_without_a_threshold_says_it_does_nothing(monkeypatch, caplog, synth_root):
    import mcls.identity as I
    import mcls.persons as P
    from tests.conftest import tiny_settings
    s = tiny_settings(synth_root)
    monkeypatch.setattr(P, 'person_threshold', lambda s: {'threshold': 0.0, 'align': 'eyes', 'photos': 40})
    monkeypatch.setattr(I, 'identity_embeddings', lambda crops, *a, **k: np.ones((len(crops), 4)))   # identical faces
    with caplog.at_level(logging.WARNING):
        groups, _, _ = P.group_eval(s, ['a'] * 7)
    assert len(set(groups)) == 7                        # nothing grouped, as the threshold says...
    assert 'persons auto does nothing here' in caplog.text and 'persons = off' in caplog.text   # ...and it is said


# --- 11: bookkeeping never stops the work ---

@pytest.mark.parametrize('where', ['a file', 'below a file'])
def test_an_unwritable_jobs_registry_runs_the_job_counted_alone(tmp_path, monkeypatch, caplog, where):
    import mcls.threads as T
    blocker = tmp_path / 'registry'
    blocker.write_text('not a folder')
    monkeypatch.setattr(T, 'REGISTRY', blocker if where == 'a file' else blocker / 'inner')
    with caplog.at_level(logging.WARNING):
        with T.job():
            assert T.live_jobs() == 1 and T.resolve_threads(None)[1] == 1
    assert 'the jobs registry cannot be written' in caplog.text and 'counted' in caplog.text
    assert blocker.read_text() == 'not a folder'


# --- minor items ---

def test_evaluate_against_answers_for_fewer_photos_is_refused(tmp_path):
    from mcls.evaluate import evaluate_files
    ids = [f'{i}.jpg' for i in range(14)]
    sub = _submission(tmp_path / 'sub.csv', ids, [0] * 14)
    ans = _submission(tmp_path / 'ans.csv', ids[:4], [0] * 4)
    with pytest.raises(DataError,
                       match=r'no answer for 10 ImageID\(s\) of .*sub.csv, first 4.jpg'): evaluate_files(sub, ans)


@pytest.mark.cli
@needs_read_only
@pytest.mark.parametrize('args', [('predict', '--out', str(READ_ONLY / 'sub.csv')),
                                  ('compare', 'a', 'b', '--json', str(READ_ONLY / 'c.json')),
                                  ('compare', 'a', 'b', '--plot', str(READ_ONLY / 'c.png'))])
def test_outputs_in_a_read_only_folder_are_refused_before_the_work(tmp_path, args):
    r = _cli(*args, '--set', f'paths.cache={tmp_path / "crops"}', cwd=tmp_path)
    one_line_error(r, str(READ_ONLY), 'does not take new files')
    assert not (tmp_path / 'crops').exists()


def test_output_folders_are_probed_too(tmp_path):
    from mcls.atomic import output_dir, output_file
    assert output_file(tmp_path / 'new' / 'sub.csv', 'x') == tmp_path / 'new' / 'sub.csv'   # a folder still to make
    assert list(tmp_path.iterdir()) == []                                                  # the probe left nothing
    if READ_ONLY.is_dir():
        with pytest.raises(WriteError, match='does not take new files'): output_dir(READ_ONLY, 'the cache')


def test_a_cut_run_json_is_listed_as_damaged(tmp_path):
    from mcls.runs import list_runs
    for name, text in (('20260101-000000-mask-fold0', '{"task": "mask", "status": "done", "valid_f1": 0.5}'),
                       ('20260101-000001-age-fold0', '{"task": "age", "status": "tra'),
                       ('20260101-000002-gender-fold0', '[1, 2]')):
        (tmp_path / name).mkdir()
        (tmp_path / name / 'run.json').write_text(text)
    df = list_runs(tmp_path).set_index('run')
    assert len(df) == 3 and df.loc['20260101-000000-mask-fold0', 'status'] == 'done'
    for cut in ('20260101-000001-age-fold0', '20260101-000002-gender-fold0'):
        assert df.loc[cut, 'status'] == 'damaged' and 'run.json unreadable' in df.loc[cut, 'reason']


def test_tune_over_folders_with_the_same_validation_photos_is_refused(tmp_path):
    from mcls.tune import load_oof
    a = _valid_folder(tmp_path / 'fold0')
    b = _valid_folder(tmp_path / 'copy', seed=3)         # the same photos validated again
    assert len(load_oof([a], 'age')[1]) == 12
    with pytest.raises(DataError, match=r'mask0\.jpg is in the validation of both .*fold0 and .*copy'):
        load_oof([a, b], 'age')


def test_more_threads_than_cores_is_said(monkeypatch):
    import mcls.threads as T
    monkeypatch.setattr(T, 'cores', lambda: 2)
    assert 'more than the 2 cores here' in T.describe_threads(64, 64, 0)
    assert T.describe_threads(2, 2, 0) == '2 torch threads (threads = 2)'


@pytest.mark.cli
@needs_read_only
@pytest.mark.parametrize('args', [('suspects', 'age', '--set', f'paths.reports={READ_ONLY}/reports'),
                                  ('eda', '--out-dir', str(READ_ONLY / 'eda')),
                                  ('interpret', 'age', '--set', f'paths.reports={READ_ONLY}/reports')])
def test_report_folders_are_probed_before_the_work(trained, tmp_path, args):
    "suspects would train folds, interpret and eda read every photo, before writing their reports"
    extra = ['--models', str(trained['models'])] if args[0] == 'interpret' else []
    r = _cli(*args, *extra, '--data', trained['root'] / 'data', '--set', f'paths.cache={tmp_path / "crops"}',
             '--set', f'paths.models={tmp_path / "models"}', cwd=tmp_path)
    one_line_error(r, str(READ_ONLY), 'does not take new files')
    assert not (tmp_path / 'crops').exists() and not (tmp_path / 'models').exists()
