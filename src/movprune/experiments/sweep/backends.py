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
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from movprune.errors import MovpruneError
from movprune.experiments.sweep import RunOutcome, SweepRun, run_one


def _limit_threads(threads: int) -> None:
    """Worker initialiser: share the machine's cores between the concurrent runs."""
    import torch

    torch.set_num_threads(threads)


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
                                 initializer=_limit_threads, initargs=(self.threads_per_run,)) as pool:
            futures = {pool.submit(run_one, run, force): (index, run) for index, run in runs}
            try:
                for future in as_completed(futures):
                    index, run = futures[future]
                    try:
                        yield index, future.result()
                    except BrokenProcessPool as e:  # a worker died (killed, out of memory)
                        yield index, RunOutcome(run, "failed", error=f"its worker process died ({e})")
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise


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
