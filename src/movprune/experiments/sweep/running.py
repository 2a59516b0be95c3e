"""Running a sweep's runs (in this process or on a backend) and what happened to each."""

from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from movprune import results
from movprune.errors import MovpruneError, ResultExistsError, RunInterrupted, RunLockedError
from movprune.experiments.sweep.finished import check_finished_recipes
from movprune.experiments.sweep.plan import SweepRun
from movprune.io import atomic_write_text
from movprune.results import RunResult
from movprune.run_folder import is_movprune_run, unfinished_staging

#: Written into an unfinished run folder when its run raised (the folder stays unfinished).
ERROR_FILE = "error.txt"


@dataclass
class RunOutcome:
    """What happened to one run of a sweep."""

    run: SweepRun
    status: Literal["finished", "skipped", "failed", "locked"]
    result: RunResult | None = None
    error: str | None = None
    seconds: float = 0.0


class SweepObserver(Protocol):
    """Receives a sweep's progress (the CLI draws it; the library never prints)."""

    def on_run_start(self, index: int, total: int, run: SweepRun):
        """Called before a run trains; may return a training-loop observer for that run."""

    def on_run_end(self, index: int, total: int, outcome: RunOutcome) -> None:
        """Called after a run finished, failed, was skipped, or was locked by another process."""


def done_earlier(sweep_run: SweepRun) -> bool:
    """A finished run with no interrupted ``--force`` re-run of it pending (that re-run is resumed,
    never reported as the old result)."""
    return results.is_finished(sweep_run.run_dir) and not unfinished_staging(sweep_run.run_dir)


def pending(plan: list[SweepRun], force: bool = False) -> list[SweepRun]:
    """The runs that would train (all with ``force``, else those not :func:`done_earlier`)."""
    return [r for r in plan if force or not done_earlier(r)]


def run_one(sweep_run: SweepRun, force: bool = False, observer: Any = None) -> RunOutcome:
    """Train one run of a sweep; never raises for the run's own failure.

    A run another process is writing (its lock is held) comes back ``locked``; one another sweep
    finished meanwhile, ``skipped``; a run that raises, ``failed``, its traceback in ``error.txt`` in
    its unfinished folder. An unfinished run resumes from its newest checkpoint; SIGTERM / Ctrl-C
    save it and stop the sweep (:class:`RunInterrupted` propagates). The same rules hold on every
    backend: this is what a worker process or a Ray task runs.
    """
    from movprune.training import run as train_run

    start = time.perf_counter()
    if not force and is_movprune_run(sweep_run.run_dir):  # a resumed run may succeed this time
        (sweep_run.run_dir / ERROR_FILE).unlink(missing_ok=True)
    try:
        result = train_run(sweep_run.recipe, force=force, resume=not force, observer=observer)
        return RunOutcome(sweep_run, "finished", result=result, seconds=time.perf_counter() - start)
    except RunInterrupted:
        raise
    except RunLockedError as e:  # another sweep is running it
        return RunOutcome(sweep_run, "locked", error=str(e))
    except ResultExistsError as e:  # another sweep finished it since the check above
        if results.is_finished(sweep_run.run_dir):
            return RunOutcome(sweep_run, "skipped", result=results.load_result(sweep_run.run_dir))
        return RunOutcome(sweep_run, "failed", error=str(e))
    except Exception as e:  # one failing run must not stop the others
        message = str(e) if isinstance(e, MovpruneError) else f"{type(e).__name__}: {e}"
        if (sweep_run.run_dir.is_dir() and not results.is_finished(sweep_run.run_dir)
                and is_movprune_run(sweep_run.run_dir)):
            atomic_write_text(sweep_run.run_dir / ERROR_FILE, traceback.format_exc())
        return RunOutcome(sweep_run, "failed", error=message, seconds=time.perf_counter() - start)
    finally:
        gc.collect()  # the finished model is garbage; free it before the next one loads


class SweepBackend(Protocol):
    """Runs the pending runs of a sweep somewhere else (worker processes, a Ray cluster)."""

    def run_all(self, runs: list[tuple[int, SweepRun]], force: bool) -> Iterator[tuple[int, RunOutcome]]:
        """Start every ``(index, run)`` and yield ``(index, outcome)`` as each one ends."""
        ...


def run_sweep(plan: list[SweepRun], *, force: bool = False,
              observer: SweepObserver | None = None, backend: SweepBackend | None = None) -> list[RunOutcome]:
    """Run every combination of ``plan``; returns one outcome per run, in plan order.

    Finished runs are skipped untouched (unless ``force``), after checking they were trained with
    the recipe asked (:func:`check_finished_recipes`); the other runs follow :func:`run_one`'s rules
    (locked, failed) and the sweep goes on. With ``force`` a finished run is replaced only once its
    new run has finished. Without a ``backend`` the runs train in this process one after another;
    with one, they run where the backend puts them and the observer hears of each as it ends.
    Ctrl-C stops the sweep, leaving the current runs unfinished (a forced one leaves the old result
    in place).
    """
    if not force and plan:
        check_finished_recipes(plan, "sweep")
    total = len(plan)
    outcomes: dict[int, RunOutcome] = {}
    todo: list[tuple[int, SweepRun]] = []
    for index, sweep_run in enumerate(plan):
        if not force and done_earlier(sweep_run):
            outcomes[index] = RunOutcome(sweep_run, "skipped", result=results.load_result(sweep_run.run_dir))
            if observer:
                observer.on_run_end(index, total, outcomes[index])
        else:
            todo.append((index, sweep_run))
    if backend is None:
        for index, sweep_run in todo:
            run_observer = observer.on_run_start(index, total, sweep_run) if observer else None
            outcomes[index] = run_one(sweep_run, force, run_observer)
            if observer:
                observer.on_run_end(index, total, outcomes[index])
    else:
        for index, outcome in backend.run_all(todo, force):
            outcomes[index] = outcome
            if observer:
                observer.on_run_end(index, total, outcome)
    return [outcomes[i] for i in range(total)]

