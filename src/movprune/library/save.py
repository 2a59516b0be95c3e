"""The run folder of a pruning session: the same format as ``movprune run``'s (``model/``,
``recipe.yaml``, ``result.json`` written last), so that inspect, export and compare read it.

The folder says where it came from: ``result.json`` has ``"source": "library"`` and ``recipe.yaml``
opens with a comment saying that the model was trained by the user's code, so that the file is a
record of the settings rather than a recipe that reproduces the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from movprune import distributed, identity, results, run_folder, tasks
from movprune.io import atomic_write_text
from movprune.results import RunResult
from movprune.training import check_finite_weights, result_record

if TYPE_CHECKING:
    from movprune.library.session import PruningSession

#: ``result.json``'s ``source`` for a folder written through the library API.
SOURCE = identity.LIBRARY_SOURCE
_RECIPE_HEADER = ("# Written by movprune's library API: the model was trained by the user's own code, not by\n"
                  "# `movprune run`. This records the pruner and the settings the user gave; running it with\n"
                  "# `movprune run` trains with movprune's loop instead.\n")


def recipe_record(session: PruningSession, *, name: str, task: str, model_name: str, seed: int,
                  train_settings: dict[str, Any]) -> str:
    """``recipe.yaml`` of a library run: a valid recipe when the task is one of movprune's and the
    settings are recipe ``train:`` keys, else the same mapping unvalidated."""
    from movprune.recipe import Recipe

    data: dict[str, Any] = {"name": name, "task": task, "model": model_name,
                            "seed": seed,
                            "pruner": session.config.model_dump(mode="json"),
                            "train": {**train_settings, "max_steps": session.total_steps}}
    if not tasks.check_name(task):
        try:
            recipe = Recipe.model_validate(data)  # valid, but only the keys the user gave are written
            return _RECIPE_HEADER + yaml.safe_dump(recipe.model_dump(mode="json", exclude_unset=True), sort_keys=False)
        except ValueError:  # settings that are not recipe keys: keep them as given
            pass
    return _RECIPE_HEADER + yaml.safe_dump(data, sort_keys=False)


def save_run(session: PruningSession, output_dir: Path, tokenizer: Any, *, task: str, metrics: dict[str, float],
             model_name: str | None, seed: int, train_settings: dict[str, Any], force: bool) -> RunResult:
    """Write the baked ``session``'s run folder at ``output_dir`` (see :meth:`PruningSession.save`)."""
    model = session.model
    assert model is not None and session.baked
    model_name = model_name or getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    check_finite_weights(model)
    name = output_dir.name
    result = result_record(
        name=name, task=task, model_name=str(model_name), pruner=session.pruner, pruner_config=session.config,
        final_model=model, metrics={k: float(v) for k, v in metrics.items()}, metric_names=list(metrics),
        seed=seed, steps=session.steps_done, train_seconds=session.train_seconds,
        num_processes=distributed.world_size(), source=SOURCE)

    def write() -> None:
        with run_folder.claim(output_dir, force) as folder:
            atomic_write_text(folder.path / results.RECIPE_FILE, recipe_record(
                session, name=name, task=task, model_name=str(model_name), seed=seed, train_settings=train_settings))
            results.save_model_atomically(model, tokenizer, folder.path)
            result.save(folder.path)  # last: the folder is finished from here on
            folder.publish()

    # On the main process; an error there (a finished run in the way) is raised on every process.
    distributed.main_first(write)
    result.run_dir = str(output_dir)
    return result
