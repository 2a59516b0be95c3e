"""Where a sweep's runs execute, besides one after another in this process (the default).

* :class:`ProcessPoolBackend` (``movprune sweep --jobs N``): N worker processes on this machine.
* :class:`RayBackend` (``movprune sweep --backend ray``): each run a Ray task on a cluster
  (``--ray-address``) or on a local Ray instance started for the sweep.

Both run :func:`~movprune.experiments.sweep.run_one` for each run, so resume, skip and failure
isolation are the local rules: the caller skips finished runs before anything is dispatched, and a
run that raises comes back as a failed outcome with ``error.txt`` in its folder. Placement,
retries after a lost worker and cluster membership are Ray's; this module schedules nothing.
Every worker writes its run folder itself, so all machines must see the same results folder
(a shared filesystem).

Worker processes never outlive the sweep: SIGTERM to the sweep is forwarded to the workers, whose
runs save a checkpoint and stop, and the sweep then stops with the interrupted line; when the sweep
process dies without a word (``kill -9``), each worker gets SIGTERM from the kernel (Linux's
parent-death signal; elsewhere a thread watching the parent) and does the same.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from movprune.errors import MovpruneError, RunInterrupted
from movprune.experiments.sweep import RunOutcome, SweepRun, run_one

_PR_SET_PDEATHSIG = 1
#: The sweep process a worker serves (set in the worker by :func:`_init_worker`).
_parent_pid: int | None = None
#: Set in a worker once it was told to stop: it starts no further run.
_stopping = False


def _init_worker(threads: int, parent: int) -> None:
    """Worker initialiser: share the machine's cores between the concurrent runs, and stop (SIGTERM:
    the run saves a checkpoint) when the sweep process dies."""
    import torch

    global _parent_pid
    _parent_pid = parent
    torch.set_num_threads(threads)
    signal.signal(signal.SIGTERM, _stop_idle_worker)  # a run's own handler takes over while it trains
    if not _ask_kernel_for_parent_death_signal():
        threading.Thread(target=_watch_parent, daemon=True).start()
    if os.getppid() != parent:  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def _ask_kernel_for_parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stop_idle_worker(signum, frame) -> None:
    global _stopping
    _stopping = True
    if os.getppid() != _parent_pid:  # the sweep is gone: nothing is training here, nothing to save
        os._exit(128 + signum)


def _watch_parent() -> None:
    while os.getppid() == _parent_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _worker_run_one(run: SweepRun, force: bool) -> RunOutcome:
    """One run in a worker; none starts, and the worker exits, once the sweep process is gone
    (runs queued for this worker would otherwise train for nobody)."""
    global _stopping
    if _parent_pid is not None and os.getppid() != _parent_pid:
        os._exit(128 + signal.SIGTERM)
    if _stopping:
        raise RunInterrupted("not started (the sweep was stopped)", 128 + signal.SIGTERM, None)
    try:
        return run_one(run, force)
    except RunInterrupted:
        _stopping = True
        raise
    finally:
        if _parent_pid is not None and os.getppid() != _parent_pid:
            os._exit(128 + signal.SIGTERM)  # the run saved its checkpoint; no one to report to


@contextlib.contextmanager
def _forward_sigterm(pool: Any) -> Iterator[list[int]]:
    """While the block runs, SIGTERM to this process is sent on to the pool's workers (their runs
    save a checkpoint and stop); yields a list that holds the signal once received."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def forward(signum, frame) -> None:
        received.append(signum)
        for process in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(ProcessLookupError, AttributeError, TypeError):
                os.kill(process.pid, signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


class ProcessPoolBackend:
    """Runs up to ``jobs`` runs at once, each in its own process on this machine."""

    def __init__(self, jobs: int, threads_per_run: int | None = None):
        if jobs < 1:
            raise MovpruneError(f"--jobs {jobs}: give at least 1 (the number of runs trained at once)")
        self.jobs = jobs
        self.threads_per_run = threads_per_run or max(1, (os.cpu_count() or 1) // jobs)

    def run_all(self, runs: list[tuple[int, SweepRun]], force: bool) -> Iterator[tuple[int, RunOutcome]]:
        """Start every run on the pool; yield each outcome as the run ends."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        if not runs:
            return
        # spawn: a forked child would inherit this process's torch threads and locks.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(self.jobs, len(runs)), mp_context=context,
                                 initializer=_init_worker, initargs=(self.threads_per_run, os.getpid())) as pool, \
                _forward_sigterm(pool) as stopped:
            futures = {pool.submit(_worker_run_one, run, force): (index, run) for index, run in runs}
            interrupted: list[str] = []
            try:
                for future in as_completed(futures):
                    if stopped and not interrupted:
                        pool.shutdown(wait=False, cancel_futures=True)  # start nothing more
                    index, run = futures[future]
                    if future.cancelled():
                        continue
                    try:
                        yield index, future.result()
                    except RunInterrupted as e:
                        interrupted.append(f"{run.name}: {e}")
                    except BrokenProcessPool as e:  # a worker died (killed, out of memory)
                        if stopped:
                            interrupted.append(f"{run.name}: its worker stopped before saving")
                        else:
                            yield index, RunOutcome(run, "failed", error=f"its worker process died ({e})")
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            if interrupted or stopped:
                signum = stopped[0] if stopped else signal.SIGTERM
                raise RunInterrupted(f"sweep stopped by {signal.Signals(signum).name}: "
                                     f"{'; '.join(interrupted) or 'no run was training'}", 128 + signum, None)


def _ray_run_one(run: SweepRun, force: bool) -> RunOutcome:
    """The body of one Ray task."""
    return run_one(run, force)


class RayBackend:
    """Runs every run as a Ray task with ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs.

    ``address`` joins an existing cluster (``"auto"``, ``"ray://head:10001"``, ...); None starts a
    local Ray instance for the sweep and stops it afterwards, unless this process is already
    connected to Ray (then that connection is used and left open). ``init_options`` go to
    ``ray.init`` when this backend starts Ray.
    """

    def __init__(self, address: str | None = None, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0,
                 init_options: dict[str, Any] | None = None):
        if cpus_per_run <= 0 or gpus_per_run < 0:
            raise MovpruneError(f"--cpus-per-run {cpus_per_run:g} / --gpus-per-run {gpus_per_run:g}: "
                                "give at least a fraction of a CPU and no negative number of GPUs")
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self.init_options = init_options or {}

    def _connect(self) -> tuple[Any, bool]:
        try:
            import ray
        except ImportError:
            raise MovpruneError("--backend ray needs Ray: pip install 'movprune[ray]'") from None
        if ray.is_initialized():
            return ray, False
        options = {"include_dashboard": False, "log_to_driver": False, **self.init_options}
        try:
            ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            raise MovpruneError(f"cannot connect to {where} ({type(e).__name__}: {e}); start one with "
                                "'ray start --head' or leave --ray-address out for a local one") from None
        return ray, True

    def run_all(self, runs: list[tuple[int, SweepRun]], force: bool) -> Iterator[tuple[int, RunOutcome]]:
        """Submit every run as a Ray task; yield each outcome as its task ends."""
        if not runs:
            return
        ray, started = self._connect()
        try:
            task = ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run)(_ray_run_one)
            refs = {task.remote(run, force): (index, run) for index, run in runs}
            waiting = list(refs)
            try:
                while waiting:
                    done, waiting = ray.wait(waiting, num_returns=1)
                    index, run = refs[done[0]]
                    try:
                        yield index, ray.get(done[0])
                    except ray.exceptions.RayError as e:  # the task's worker died (after Ray's retries)
                        yield index, RunOutcome(run, "failed", error=f"Ray task failed: {type(e).__name__}: {e}")
            except BaseException:
                for ref in waiting:
                    ray.cancel(ref, force=True)
                raise
        finally:
            if started:
                ray.shutdown()
