"""Live tracking (``train.report_to``) through accelerate's trackers: TensorBoard under the run folder,
Weights & Biases and MLflow where their packages are installed (optional extras).

Scalars go under ``train/`` (losses, lr, remaining %, λ, ...) and ``eval/`` (metrics); the resolved
recipe is logged as hyper-parameters with dotted keys (``train.lr``).
"""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from typing import Any

from movprune.errors import RecipeError
from movprune.recipe import Recipe

#: Where each tracker's package comes from: (module, pip extra).
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow")}
#: The TensorBoard log folder inside the run folder.
TENSORBOARD_DIR = "tensorboard"
PROJECT = "movprune"


def check_available(recipe: Recipe, source: str) -> None:
    """Raise :class:`RecipeError` when a tracker in ``train.report_to`` is not installed (accelerate
    would only warn and drop it)."""
    problems = []
    for name in recipe.train.report_to:
        module, extra = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            problems.append(f"train.report_to: '{name}' is not installed; pip install 'movprune[{extra}]' "
                            f"or remove it from report_to")
    if problems:
        raise RecipeError(source, problems)


def new_tracking_id() -> str:
    """An id that names the run in trackers that can continue a run (W&B), kept across resumes."""
    return uuid.uuid4().hex[:12]


def start(accelerator: Any, recipe: Recipe, run_dir: Path, *, resume_step: int | None,
          tracking_id: str) -> None:
    """Start the trackers of ``train.report_to`` on the main process and hand them to
    ``accelerator`` (whose ``log`` then reaches them), with the resolved recipe as hyper-parameters.

    ``run_dir`` is where the run writes (a forced re-run's staging folder, swapped in when it
    finishes), known only after the Accelerator exists: hence trackers started here rather than
    passed as ``Accelerator(log_with=...)``, as ``init_trackers`` would. On resume, TensorBoard drops
    the events the interrupted run logged after its checkpoint (``purge_step``), and W&B continues
    the same run (same id).
    """
    if not accelerator.is_main_process:
        return
    config = hyperparameters(recipe)
    for tracker in _build(recipe, run_dir, resume_step=resume_step, tracking_id=tracking_id):
        tracker.start()
        tracker.store_init_configuration(config)
        accelerator.trackers.append(tracker)


def _build(recipe: Recipe, run_dir: Path, *, resume_step: int | None, tracking_id: str) -> list[Any]:
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    trackers: list[Any] = []
    for name in recipe.train.report_to:
        if name == "tensorboard":
            kwargs = {"purge_step": resume_step + 1} if resume_step is not None else {}
            trackers.append(TensorBoardTracker(TENSORBOARD_DIR, str(run_dir), **kwargs))
        elif name == "wandb":
            trackers.append(WandBTracker(PROJECT, name=recipe.run_name, dir=str(run_dir), id=tracking_id,
                                         resume="allow"))
        elif name == "mlflow":
            trackers.append(MLflowTracker(experiment_name=PROJECT, run_name=recipe.run_name,
                                          tags={"movprune.tracking_id": tracking_id}))
    return trackers


def hyperparameters(recipe: Recipe) -> dict[str, str | int | float | bool]:
    """The resolved recipe, flattened to dotted keys with scalar values (what trackers accept)."""
    out: dict[str, str | int | float | bool] = {}

    def walk(data: Any, prefix: str) -> None:
        if isinstance(data, dict):
            for key, value in data.items():
                walk(value, f"{prefix}{key}.")
        elif data is None or isinstance(data, (list, tuple)):
            out[prefix[:-1]] = "null" if data is None else ",".join(map(str, data))
        else:
            out[prefix[:-1]] = data

    walk(recipe.model_dump(mode="json"), "")
    return out


def train_scalars(record: dict[str, Any]) -> dict[str, float]:
    """A ``metrics.jsonl`` training record as tracker scalars (``train/loss``, ``train/lr``, ...)."""
    return {f"train/{k}": float(v) for k, v in record.items() if k != "step" and isinstance(v, (int, float))}


def eval_scalars(metrics: dict[str, float], remaining_pct: float) -> dict[str, float]:
    """Evaluation metrics and the remaining % at that point as tracker scalars."""
    return {**{f"eval/{k}": float(v) for k, v in metrics.items()}, "eval/remaining_pct": float(remaining_pct)}


def finish(accelerator: Any) -> None:
    """Close the run's trackers (flushes TensorBoard, ends the W&B and MLflow runs), also when the run
    raised: a later run in the same process (a sweep) starts its own. Not ``end_training``, which
    also tears down the process group."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()
