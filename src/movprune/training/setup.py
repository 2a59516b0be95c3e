"""Everything a run prepares before its first step: the task's data, the model with its pruner's
masks (calibrated when the method asks), the teacher, the optimizer and its schedule, the data order,
``accelerate``'s wrapping, the state a resumed run continues from, and the trackers."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from movprune import pruners, tasks
from movprune.errors import DataError, RunInterrupted
from movprune.models import resolve_model
from movprune.recipe import Recipe, TrainConfig
from movprune.tasks.base import TaskData
from movprune.training import checkpoint, distill, preemption, tracking
from movprune.training.data import data_digests, prepare_data
from movprune.training.evaluation import evaluate_all
from movprune.training.observer import Observer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def total_steps(recipe: Recipe, num_train: int) -> int:
    """Optimizer steps of the run: ``max_steps``, else ``epochs`` over the training set.

    ``train.batch_size`` is the global batch, so the count does not depend on how many processes
    share it.
    """
    if recipe.train.max_steps is not None:
        return recipe.train.max_steps
    per_epoch = math.ceil(num_train / recipe.train.batch_size)
    return max(1, math.ceil(recipe.train.epochs * per_epoch))


def calibration_batches(task: tasks.Task, data: TaskData, tokenizer: PreTrainedTokenizerBase, recipe: Recipe,
                        samples: int, device: torch.device | str) -> list[dict[str, Any]]:
    """``samples`` examples of the train split (all of them when it is smaller) in batches of
    ``train.batch_size``, on ``device``: the first ones of a permutation drawn from the recipe's seed,
    so every process and every rerun calibrates on the same examples."""
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(recipe.seed))[:samples]
    collate = task.collate(tokenizer)
    size = recipe.train.batch_size
    return [{k: v.to(device) for k, v in collate([data.train[int(i)] for i in order[start:start + size]]).items()}
            for start in range(0, len(order), size)]


class StoppableBatches(Sequence):
    """Calibration batches that honour a stop request: each pass over them checks, before every
    batch, whether SIGTERM or Ctrl-C arrived, and raises :class:`RunInterrupted` if so.

    A one-shot method calibrates for minutes before the first training step; a scheduler's grace
    period (often 30 s after SIGTERM) would run out long before the loop's first step boundary.
    Calibration has no checkpoint, so the interrupted run is unfinished and starts over when rerun.
    """

    def __init__(self, batches: list[dict[str, Any]], stop: preemption.StopSignals):
        self._batches = batches
        self._stop = stop

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, index):  # an int or a slice, as a list takes
        return self._batches[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self._batches:
            if self._stop.signum is not None:
                raise RunInterrupted(f"stopped by {self._stop.name} during calibration, before the first "
                                     "step; there is no checkpoint, so a rerun calibrates again",
                                     self._stop.exit_code, None)
            yield batch


def optimizer_groups(model: torch.nn.Module, pruner: pruners.Pruner, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: the model's trainable weights (``weight_decay`` except on biases and
    LayerNorms) and the pruner's own groups (scores with their learning rate)."""
    extra = pruner.parameter_groups()
    taken = {id(p) for g in extra for p in g["params"]}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in taken:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "weights"},
            {"params": no_decay, "weight_decay": 0.0, "name": "weights_no_decay"}, *extra]


def build_optimizer(model: torch.nn.Module, pruner: pruners.Pruner, train: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`optimizer_groups` at ``train.lr``."""
    return torch.optim.AdamW(optimizer_groups(model, pruner, train.weight_decay), lr=train.lr)


@dataclass
class Prepared:
    """A run ready for its first (or, resumed, its next) step; ``model``, ``optimizer`` and the
    loader under ``stream`` are wrapped by ``accelerate``."""

    task: tasks.Task
    tokenizer: Any
    data: TaskData
    model: torch.nn.Module
    pruner: pruners.Pruner
    distiller: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    stream: checkpoint.BatchStream
    loop: checkpoint.LoopState
    steps: int
    #: SHA-256 of every data file the run reads; checkpoints keep it so a resume on changed data is refused.
    data_sha256: dict[str, str]


def prepare(recipe: Recipe, run_dir: Path, accelerator: Any, teacher: Any, obs: Observer, *,
            resume_from: Path | None, cleanup: ExitStack, stop: preemption.StopSignals | None = None) -> Prepared:
    """Build the run of ``recipe`` writing into ``run_dir``, from the checkpoint ``resume_from`` when
    given; the trackers it starts are closed by ``cleanup`` however the run ends. A ``stop`` request
    during calibration raises :class:`RunInterrupted` (see :class:`StoppableBatches`)."""
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    set_seed(recipe.seed)
    task = tasks.get_task(recipe.task, recipe.dataset)
    resolved = resolve_model(recipe.model)
    tokenizer = resolved.tokenizer()
    obs.on_phase("preparing data")
    # The main process tokenises and caches first, then one process per machine (the cache may be
    # local to each machine), then the rest read the cache.
    with accelerator.main_process_first(), accelerator.local_main_process_first():
        data = prepare_data(task, recipe, tokenizer)
    digests = data_digests(task, recipe)
    if len(data.train) == 0:
        raise DataError(f"task {task.name}: the training split '{recipe.train_split}' is empty")
    model = task.build_model(resolved)
    embeddings = getattr(model.base_model, "embeddings", None)
    if recipe.train.freeze_embeddings and embeddings is not None:
        embeddings.requires_grad_(False)

    steps = total_steps(recipe, len(data.train))
    pruner = pruners.build_pruner(recipe.pruner, steps)
    pruner.attach(model)
    distiller = None
    if teacher is not None:
        distiller = distill.load_teacher(teacher, recipe, task, model, accelerator.device, accelerator.autocast)
        if distiller.teacher_metrics is None:  # a model folder or Hub id: measure it once
            obs.on_phase("evaluating the teacher")
            distiller.teacher_metrics, _ = evaluate_all(task, distiller.teacher, data, tokenizer, recipe,
                                                        accelerator.autocast)
    if pruner.calibration_samples():
        obs.on_phase(f"calibrating on {pruner.calibration_samples()} training examples")
        model.to(accelerator.device)
        batches = calibration_batches(task, data, tokenizer, recipe, pruner.calibration_samples(),
                                      accelerator.device)
        pruner.calibrate(model, batches if stop is None else StoppableBatches(batches, stop))
        if stop is not None and stop.signum is not None:  # arrived after the last batch was read
            raise RunInterrupted(f"stopped by {stop.name} at the end of calibration, before the first step; "
                                 "there is no checkpoint, so a rerun calibrates again", stop.exit_code, None)
    optimizer = build_optimizer(model, pruner, recipe.train)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(recipe.train.lr_warmup_fraction * steps), steps)
    shuffling = torch.Generator().manual_seed(recipe.seed)
    loader = torch.utils.data.DataLoader(
        data.train, batch_size=recipe.train.batch_size, shuffle=True, collate_fn=task.collate(tokenizer),
        generator=shuffling, drop_last=False)
    # The scheduler stays outside prepare(): accelerate would step it once per process per
    # optimizer step, running the schedule N times too fast on N processes. It is registered so
    # that checkpoints (save_state / load_state) still hold it.
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    accelerator.register_for_checkpointing(scheduler)
    stream = checkpoint.BatchStream(loader, shuffling, accelerator)
    loop = checkpoint.LoopState(step=0, tracking_id=tracking.new_tracking_id())
    if resume_from is not None:
        obs.on_phase(f"resuming from {resume_from}")
        loop = checkpoint.load(accelerator, resume_from, pruner, stream)
        loop.tracking_id = loop.tracking_id or tracking.new_tracking_id()
        if accelerator.is_main_process:
            checkpoint.truncate_metrics(run_dir, loop.metrics_bytes)
    if recipe.train.report_to:
        tracking.start(accelerator, recipe, run_dir, resume_step=loop.step if resume_from else None,
                       tracking_id=loop.tracking_id)
        cleanup.callback(tracking.finish, accelerator)  # however the run ends
    return Prepared(task=task, tokenizer=tokenizer, data=data, model=model, pruner=pruner, distiller=distiller,
                    optimizer=optimizer, scheduler=scheduler, stream=stream, loop=loop, steps=steps,
                    data_sha256=digests)
