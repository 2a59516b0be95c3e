"""Sweeps: one recipe, run for every combination of pruning method, remaining-weights level, seed
and the values of any ``--grid`` key.

Runs go to ``<output_dir>/<sweep name>/<method>-r<remaining %>-s<seed>[-<key><value>...]/`` where the sweep name is
the recipe's ``name`` (or, when it has none, the recipe file's stem). A sweep is resumable: a run
whose folder already holds a finished result is skipped without being touched, an unfinished one
continues from its newest checkpoint (``train.save_every_steps``, or the one SIGTERM saved), or is
redone from scratch when it has none. Every combination is validated before the first run starts. By
default runs execute in-process, one after another, so whatever the runs share (the tokenisation
cache, a distillation teacher cache, loaded libraries) is built once; a backend
(``experiments/sweep/backends.py``: worker processes, Ray tasks) runs them elsewhere under the same rules.
"""

from movprune.experiments.sweep.axes import (
    parse_axes,
    parse_grid,
    parse_methods,
    parse_remaining_pcts,
    parse_seeds,
    split_grid_values,
)
from movprune.experiments.sweep.finished import check_finished_recipes, recipe_differences
from movprune.experiments.sweep.plan import SweepRun, format_level, plan_sweep, run_name
from movprune.experiments.sweep.running import (
    ERROR_FILE,
    RunOutcome,
    SweepBackend,
    SweepObserver,
    pending,
    run_one,
    run_sweep,
)

__all__ = [
    "ERROR_FILE", "RunOutcome", "SweepBackend", "SweepObserver", "SweepRun", "check_finished_recipes",
    "format_level", "parse_axes", "parse_grid", "parse_methods", "parse_remaining_pcts", "parse_seeds", "pending",
    "plan_sweep", "recipe_differences", "run_name", "run_one", "run_sweep", "split_grid_values",
]
