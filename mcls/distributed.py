"""Several processes (ranks) as one training or prediction job: DistributedDataParallel with NCCL on GPUs and gloo on
CPU. Ranks come from `--processes N` (`launch`, on this machine) or from torchrun / accelerate launch, through the
environment they set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Rank 0 alone writes run folders,
checkpoints, logs, exports and submissions. fastai's own path (`distrib_ctx`) needs CUDA and accelerate; this one
reuses its DistributedDL and its gathering of predictions."""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from fastai.distributed import DistributedDL
from fastai.vision.all import Callback, noop
from torch.nn.parallel import DistributedDataParallel

from .errors import RANKS_DIR, UserError
from .threads import cores

__all__ = ['RANKS_DIR', 'LAUNCHER', 'RankFailed', 'Stopped', 'follow_launcher', 'check_gpus', 'SLOW_WAIT',
           'world_size', 'rank', 'local_rank', 'is_main', 'init', 'barrier', 'main_first', 'broadcast_object', 'shard',
           'gather_shards', 'alone', 'RankDL', 'DDPTrainer', 'note_run', 'rank_args', 'launch', 'write_error']

LAUNCHER = 'MCLS_LAUNCHER_PID'      # set by `launch`: a rank lives only as long as the process that started it
# the longest rank 0 may take over main_first's block (cropping 31,500 photos: 12 min on 2 CPU cores)
SLOW_WAIT = timedelta(hours=6)
_slow = None                        # the gloo group main_first waits on


class RankFailed(UserError):
    "One rank of a launch failed; every rank was stopped."


def world_size() -> int: return int(os.environ.get('WORLD_SIZE', 1) or 1)
def rank() -> int: return int(os.environ.get('RANK', 0) or 0)
def local_rank() -> int: return int(os.environ.get('LOCAL_RANK', rank()) or 0)
def is_main() -> bool: return rank() == 0


def follow_launcher():
    """A rank of `launch` ends with its launcher, however the launcher ends (a signal, kill -9, a closed terminal):
    nothing is exported or written by a job whose command is gone. Linux delivers SIGKILL to the rank when its
    parent dies (prctl); elsewhere a thread checks the parent every second."""
    pid = int(os.environ.get(LAUNCHER, 0) or 0)
    if not pid: return
    try:
        import ctypes
        if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL) != 0: raise OSError   # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError, TypeError):     # not Linux
        import threading
        threading.Thread(target=_watch_parent, args=(pid,), daemon=True).start()
    if os.getppid() != pid: os._exit(1)      # the launcher died before this rank asked to follow it


def _watch_parent(pid: int):
    while os.getppid() == pid: time.sleep(1.0)
    os._exit(1)


def check_gpus(local_ranks: int):
    """On a GPU machine each rank on it needs a GPU of its own (NCCL): more ranks than GPUs is refused in one line
    before any rank starts, not found by rank N dying in `cuda.set_device`. CPU machines take any number (gloo)."""
    if not torch.cuda.is_available(): return
    gpus = torch.cuda.device_count()
    if local_ranks > gpus:
        raise UserError(f'{local_ranks} ranks on this machine but torch sees {gpus} GPU(s): start at most {gpus} '
                        f'(--processes {gpus}, or torchrun --nproc-per-node {gpus}), one per GPU')


def init():
    """Join the process group when launched as one of several ranks (NCCL on this rank's GPU, else gloo);
    idempotent. A gloo group with a long timeout is made beside it for `main_first`, where ranks wait for rank 0
    to fill the crop cache: NCCL's watchdog (10 minutes) would kill a job whose cache takes longer."""
    global _slow
    if world_size() <= 1 or dist.is_initialized(): return
    follow_launcher()
    if torch.cuda.is_available():
        check_gpus(int(os.environ.get('LOCAL_WORLD_SIZE', local_rank() + 1)))
        torch.cuda.set_device(local_rank())
        dist.init_process_group('nccl', device_id=torch.device('cuda', local_rank()))
    else:
        dist.init_process_group('gloo')
    _slow = dist.new_group(backend='gloo', timeout=SLOW_WAIT)
    atexit.register(_leave)


def _leave():
    if dist.is_initialized(): dist.destroy_process_group()


def _active() -> bool: return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier():
    if _active(): dist.barrier()


@contextmanager
def main_first():
    """Rank 0 runs the block first (e.g. filling the crop cache), the others after it: each file is written once.
    The others wait on the slow group, up to SLOW_WAIT."""
    def wait():
        if _active(): dist.barrier(group=_slow)
    if not is_main(): wait()
    yield
    if is_main(): wait()


def broadcast_object(obj):
    "Rank 0's `obj` on every rank."
    if not _active(): return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(n: int) -> slice:
    "This rank's contiguous share of n rows (all of them in one process)."
    bounds = np.linspace(0, n, world_size() + 1).round().astype(int)
    return slice(int(bounds[rank()]), int(bounds[rank() + 1]))


def gather_shards(part: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    "Every rank's arrays concatenated in rank order, on rank 0 (None elsewhere)."
    if not _active(): return part
    parts = [None] * dist.get_world_size() if is_main() else None
    dist.gather_object(part, parts, dst=0)
    return {k: np.concatenate([p[k] for p in parts]) for k in part} if is_main() else None


@contextmanager
def alone():
    """fastai gathers every prediction across ranks whenever WORLD_SIZE > 1; inside this block a rank predicts for
    itself (its shard, or rank 0 scoring the whole fold while the others wait)."""
    old = os.environ.get('WORLD_SIZE')
    os.environ['WORLD_SIZE'] = '1'
    try:
        yield
    finally:
        if old is None: os.environ.pop('WORLD_SIZE', None)
        else: os.environ['WORLD_SIZE'] = old


def _device_of(t): return t.cuda() if dist.get_backend() == 'nccl' else t


class RankDL(DistributedDL):
    "fastai's DistributedDL (each rank a share of every epoch, predictions gathered and unpadded) with gloo as well."
    def _broadcast(self, t, rank):
        t = _device_of(torch.tensor(t, dtype=torch.long))
        dist.broadcast(t, rank)
        return t.cpu().tolist()


class DDPTrainer(Callback):
    """Wraps the model in DistributedDataParallel and the data in RankDL for a fit; rewraps when the trainable
    parameters change (freeze/unfreeze), since DDP reduces only the gradients it was built with. Counts the
    validation photos seen across ranks each epoch (`valid_counts`)."""
    order = 12   # after ChannelsLast (-1): DDP's gradient buckets take the memory format the model trains in

    def __init__(self): self.valid_counts = []

    def _wrap_model(self, module):
        self._trainable = [p.requires_grad for p in module.parameters()]
        ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
        self.learn.model = DistributedDataParallel(module, device_ids=ids)

    def _wrap(self, dl): return dl if isinstance(dl, RankDL) or not dl.n else RankDL(dl)   # --full: no validation

    def before_fit(self):
        self._wrap_model(self.learn.model)
        self.old_loaders = list(self.dls.loaders)
        self.learn.dls.loaders = [self._wrap(dl) for dl in self.dls.loaders]
        if not is_main(): self.learn.logger = noop

    def before_epoch(self):
        module = self.learn.model.module
        if [p.requires_grad for p in module.parameters()] != self._trainable: self._wrap_model(module)

    def before_train(self): self.learn.dl = self._wrap(self.learn.dl)

    def before_validate(self):
        self.learn.dl = self._wrap(self.learn.dl)
        self._seen = 0

    def after_batch(self):
        if not self.training: self._seen += len(self.learn.to_detach(self.learn.yb[0]))   # gathered, unpadded

    def after_validate(self): self.valid_counts.append(self._seen)

    def after_fit(self):
        module = self.learn.model.module
        self.learn.model, self.learn.dls.loaders = module, self.old_loaders
        _check_in_step(module)


def _check_in_step(module):
    "Every rank must end a fit with the same weights (a gradient DDP did not reduce would part them): checked."
    total = _device_of(torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().reshape(1))
    sums = [torch.zeros_like(total) for _ in range(dist.get_world_size())]
    dist.all_gather(sums, total)
    sums = [float(x) for x in sums]
    if max(sums) - min(sums) > 1e-6 * max(1.0, abs(sums[0])):
        raise RuntimeError(f'the ranks ended the fit with different weights (parameter sums {sums}): a bug in mcls')


def note_run(run_dir: Path):
    "Under `launch`, rank 0 says which run it trains, so that a failure in any rank marks that run failed."
    where = os.environ.get(RANKS_DIR)
    if where and is_main():
        with open(Path(where) / 'runs', 'a') as fh: fh.write(f'{run_dir}\n')


def rank_args(argv: list[str]) -> list[str]:
    "The command line each rank runs: this one without --processes."
    out, skip = [], False
    for a in argv:
        if skip: skip = False; continue
        if a == '--processes': skip = True; continue
        if a.startswith('--processes='): continue
        out.append(a)
    return out


def launch(args: list[str], processes: int, stop_after: float = 10.0):
    """Run `mcls ARGS` as `processes` ranks on this machine with torch's elastic launcher (what torchrun runs: a
    c10d rendezvous on a free local port, siblings torn down when one fails, signals forwarded) and wait; the CLI
    checks `check_gpus` before any work. Each rank gets its share of the cores (OMP_NUM_THREADS, unless set) and, on
    a GPU machine, one GPU; rank 0 talks to the terminal, the others to their logs. When a rank fails the others are
    stopped, the run rank 0 was training is marked failed, and RankFailed names the rank that failed first and its
    error. SIGTERM or SIGHUP stop every rank and raise Stopped."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    for name in list(logging.root.manager.loggerDict):      # its notices of stopping ranks: mcls says it in one line
        if name.startswith('torch.distributed'): logging.getLogger(name).setLevel(logging.CRITICAL)
    tmp = Path(tempfile.mkdtemp(prefix='mcls-ranks-'))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=f'mcls-{os.getpid()}',
                          rdzv_backend='c10d', rdzv_endpoint='127.0.0.1:0', max_restarts=0, monitor_interval=0.05,
                          logs_specs=DefaultLogsSpecs(log_dir=str(tmp / 'logs'),
                                                      redirects={r: Std.ALL for r in range(1, processes)}),
                          signals_to_handle='SIGTERM,SIGINT,SIGHUP', shutdown_timeout=int(stop_after))
    try:
        threads = os.environ.get('OMP_NUM_THREADS', str(max(1, cores() // processes)))
        with _rank_environment({RANKS_DIR: str(tmp), LAUNCHER: str(os.getpid()), 'OMP_NUM_THREADS': threads}):
            elastic_launch(config, sys.executable)('-m', 'mcls', *args)
    except SignalException as e:
        raise Stopped(int(e.sigval)) from None
    except ChildFailedError as e:
        failures = e.failures
        failed = min(failures, key=lambda r: (_error_time(tmp, r), failures[r].timestamp, r))
        why = _rank_error(tmp, failed, failures[failed].exitcode)
        run = _mark_failed(tmp, f'rank {failed} of {processes} failed: {why}')
        raise RankFailed(f'rank {failed} of {processes} failed: {why}; every rank was stopped'
                         + (f', run {run} marked failed' if run else '') + f' (rank logs: {tmp})') from None
    shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _rank_environment(values: dict[str, str]):
    "Variables the ranks inherit, set in this process only while they start and run (the launcher is no rank)."
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v


class Stopped(Exception):
    """The launcher was told to stop (SIGTERM from a scheduler or `timeout`, SIGHUP from a closed terminal, Ctrl-C);
    the command exits 128 + the signal's number, as a process that signal ends."""
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _error_time(tmp: Path, r: int) -> float:
    "When rank `r` wrote its one-line error: the peers of a failed rank fail too, of its loss, later."
    err = tmp / f'rank{r}.error'
    return err.stat().st_mtime_ns if err.exists() else float('inf')


def write_error(message: str, trace: str = ''):
    "Under `launch`: a rank's one-line error for the launcher to report (and its traceback, if any, for the logs)."
    where = Path(os.environ[RANKS_DIR])
    if trace: (where / f'rank{rank()}.trace').write_text(trace)
    (where / f'rank{rank()}.error').write_text(' '.join(message.split()))


def _rank_error(tmp: Path, r: int, code: int) -> str:
    "The failed rank's own one-line error (written by mcls.cli), else the last line of its output."
    err = tmp / f'rank{r}.error'
    if err.exists(): return err.read_text().strip()
    logs = list((tmp / 'logs').glob(f'*/attempt_*/{r}/stderr.log'))     # the elastic launcher's per-rank logs
    lines = logs[0].read_text(errors='replace').strip().splitlines() if logs else []
    return lines[-1] if lines else f'exit code {code}'


def _mark_failed(tmp: Path, why: str) -> str | None:
    "The run rank 0 was training, marked failed with the launch's reason (unless it finished)."
    from .runs import run_status, update_run
    runs = tmp / 'runs'
    if not runs.exists(): return None
    run = runs.read_text().split()[-1]
    if run_status(Path(run)) != 'done': update_run(Path(run), status='failed', error=why[:500])
    return run
