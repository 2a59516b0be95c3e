"""The one training loop: every task and every pruner run through :func:`run`.

:func:`run` / ``_run`` / ``_train`` are the loop's phases (claim the folder, train, publish), kept
together so that the order of a run reads top to bottom; :func:`train_step` is one optimizer step,
shared with the benchmarks and tests. What a run prepares before its first step is
:mod:`~movprune.training.setup`, its ``result.json`` :mod:`~movprune.training.assemble`; checkpoints,
signals, trackers, guards and multi-process rules live in their own modules beside this one."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import Any

import torch

from movprune import distributed, pruners, results, run_folder, tasks
from movprune.errors import RecipeError, RunInterrupted
from movprune.io import atomic_write_json, atomic_write_text
from movprune.models import check_encoder, resolve_model
from movprune.recipe import Recipe
from movprune.results import RunResult
from movprune.training import checkpoint, distill, guards, preemption, processes, resume_checks, tracking
from movprune.training.assemble import run_result
from movprune.training.data import check_data, data_digests
from movprune.training.evaluation import evaluate_all
from movprune.training.observer import Observer, SilentObserver
from movprune.training.setup import Prepared, build_optimizer, prepare
from movprune.training.window import LogWindow

#: Also the loop's building blocks, where the benchmarks and tests have always found them.
__all__ = ["build_optimizer", "check_inputs", "evaluate_all", "run", "train_step"]


def check_inputs(recipe: Recipe, source: str = "recipe", *, resume: bool = False) -> None:
    """Fail early, before any training, on missing data files, an unresolvable model or a file the
    pruner reads (a latency table). With ``resume`` and a finished run, the pruner's files are not
    checked: the run is not trained again (its table may have moved since)."""
    task = tasks.get_task(recipe.task, recipe.dataset)
    splits = [recipe.train_split] + [s for s, _ in task.evaluation_splits(recipe.eval_split)]
    problems = task.check_data(recipe.data_dir, splits)
    if problems:
        raise RecipeError(source, problems)
    guards.check_output_dir(recipe.output_dir, source)
    model = resolve_model(recipe.model)
    check_encoder(model)
    trains = not (resume and results.is_finished(recipe.run_dir) and not run_folder.unfinished_staging(recipe.run_dir))
    if trains and (problems := pruners.check_inputs(recipe.pruner, model)):
        raise RecipeError(source, problems)
    distill.check_teacher(recipe)
    check_data(task, recipe)
    tracking.check_available(recipe, source)


def train_step(model: torch.nn.Module, batch: dict[str, Any], step: int, *, pruner: pruners.Pruner,
               optimizer: torch.optim.Optimizer, max_grad_norm: float, scheduler: Any = None,
               accelerator: Any = None, distiller: Any = None,
               autocast: Callable[[], AbstractContextManager] = nullcontext) -> dict[str, torch.Tensor]:
    """One optimizer step of fine-pruning: schedule, forward, loss (+ distillation, + penalty),
    backward, clipping, AdamW, LR schedule, the pruner's post-step hook.

    Returns the loss parts as detached tensors: converting them to numbers waits for logging, so
    the step forces no host synchronisation. ``accelerator`` (when given) does the backward pass and
    the clipping, as under ``accelerate``; otherwise plain PyTorch does.
    """
    pruner.step(step)
    with autocast():
        outputs = model(**batch)
    loss = outputs.loss
    parts = {"loss_task": loss.detach()}
    if distiller is not None:
        loss, parts["loss_distil"] = distiller.combine(batch, outputs, loss)
    penalty = pruner.penalty()
    if penalty is not None:
        loss = loss + penalty
        parts["loss_penalty"] = penalty.detach()
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    if accelerator is not None:
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(trainable, max_grad_norm)
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    pruner.after_optimizer_step()
    parts["loss"] = loss.detach()
    return parts


def run(recipe: Recipe, *, force: bool = False, resume: bool = False,
        observer: Observer | None = None) -> RunResult:
    """Fine-prune ``recipe``'s model on its task and publish the run folder; returns its result.

    The run folder is locked for the whole run (:mod:`movprune.run_folder`); with ``force`` a
    finished run of the same name is replaced only once this one has finished. ``resume``
    continues an unfinished run from its newest checkpoint (starting afresh when it has none;
    returning the result when it is finished); the recipe must be the one it started with.
    SIGTERM and Ctrl-C save a checkpoint at the next step boundary and raise :class:`RunInterrupted`.
    Under several processes only the main process claims, writes and publishes the folder.
    """
    with preemption.StopSignals() as stop, ExitStack() as cleanup:
        return _run(recipe, force=force, resume=resume and not force, observer=observer, stop=stop,
                    cleanup=cleanup)


def _run(recipe: Recipe, *, force: bool, resume: bool, observer: Observer | None,
         stop: preemption.StopSignals, cleanup: ExitStack) -> RunResult:
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    obs = observer or SilentObserver()
    check_inputs(recipe, resume=resume)
    state = distributed.init_process_state()  # before the teacher: it may train on every process
    processes.check_batch_split(recipe, state.num_processes)
    if not state.is_main_process:  # one process reports progress
        obs = SilentObserver()
    run_dir = recipe.run_dir
    # A forced re-run interrupted before it replaced the finished run trains in the staging
    # folder: --resume continues it (the command an interrupted run prints), never the old result.
    forced = resume and results.is_finished(run_dir) and run_folder.unfinished_staging(run_dir)
    if resume and results.is_finished(run_dir) and not forced:
        checkpoint.check_same_recipe(run_dir, recipe)
        return results.load_result(run_dir)
    force = force or bool(forced)
    writes_in = run_folder.staging_path(run_dir) if forced else run_dir
    resume_from, passed_over = resume_checks.newest_usable(writes_in) if resume else (None, [])
    for line in passed_over:
        obs.on_phase(f"{line}: resuming from the older {resume_from.name}")
    if resume_from is not None:
        checkpoint.check_same_recipe(writes_in, recipe)
        resume_checks.check_same_data(resume_from, data_digests(tasks.get_task(recipe.task, recipe.dataset), recipe))
    elif not results.is_finished(run_dir) and (unused := checkpoint.latest(run_dir)) is not None:
        obs.on_phase(f"starting over: {run_dir} held an unfinished run's checkpoint ({unused.name}); "
                     "--resume would have continued it")
    # Before this run's Accelerator: an automatic teacher is itself a run (trained once, cached).
    teacher = (distill.prepare_teacher(recipe, lambda dense: run(dense, observer=obs), obs.on_phase)
               if recipe.distill is not None else None)
    # split_batches: the loader yields the global batch and each process takes its share of it,
    # so step k sees the same examples on 1 or N processes.
    accelerator = Accelerator(mixed_precision="bf16" if recipe.train.bf16 else "no",
                              dataloader_config=DataLoaderConfiguration(split_batches=True))
    main = accelerator.is_main_process
    with contextlib.ExitStack() as stack:
        def claim() -> run_folder.RunFolder:
            folder = stack.enter_context(run_folder.claim(run_dir, force, resume=resume_from is not None))
            atomic_write_text(folder.path / results.RECIPE_FILE, recipe.to_yaml())
            return folder

        # On the main process; an error there (the folder is locked, the run finished) is raised
        # on every process, so none waits for a run that will not start.
        folder = distributed.main_first(claim) or run_folder.worker_folder(run_dir)
        result = _train(recipe, folder.path, accelerator, teacher, obs,
                        resume_from=resume_from, stop=stop, cleanup=cleanup)
        if main:
            folder.publish()
        accelerator.wait_for_everyone()
    result.run_dir = str(recipe.run_dir)
    return result


def _train(recipe: Recipe, run_dir: Path, accelerator, teacher, obs: Observer, *, resume_from: Path | None,
           stop: preemption.StopSignals, cleanup: ExitStack) -> RunResult:
    """The run itself, writing into ``run_dir`` (the run folder, or its staging folder), from
    ``resume_from`` (a checkpoint) when given."""
    prepared = prepare(recipe, run_dir, accelerator, teacher, obs, resume_from=resume_from, cleanup=cleanup,
                       stop=stop)
    log = results.MetricsLog(run_dir)
    obs.on_start(prepared.steps, recipe.run_dir)
    train_seconds, eval_seconds = _steps(recipe, prepared, run_dir, accelerator, obs, stop, log)
    return _finish(recipe, prepared, run_dir, accelerator, obs, log, train_seconds, eval_seconds)


def _steps(recipe: Recipe, run: Prepared, run_dir: Path, accelerator, obs: Observer,
           stop: preemption.StopSignals, log: results.MetricsLog) -> tuple[float, float]:
    """The training steps from ``run.loop.step`` on, with their logging, mid-run evaluations and
    checkpoints; returns the seconds spent training and evaluating (the run's, resumed or not).

    The loop itself reads back from the device only on logging and checkpoint steps: the logged
    losses, and under several processes whether any of them was asked to stop."""
    main = accelerator.is_main_process
    model, pruner, steps, loop = run.model, run.pruner, run.steps, run.loop
    model.train()
    window: LogWindow = loop.window
    window.started = start = time.perf_counter()
    eval_seconds = loop.eval_seconds

    def train_seconds() -> float:
        return loop.train_seconds + time.perf_counter() - start - (eval_seconds - loop.eval_seconds)

    for step in range(loop.step, steps):
        batch = next(run.stream)
        parts = train_step(model, batch, step, pruner=pruner, optimizer=run.optimizer, scheduler=run.scheduler,
                           max_grad_norm=recipe.train.max_grad_norm, accelerator=accelerator,
                           distiller=run.distiller)
        window.add(parts, len(batch["input_ids"]) * accelerator.num_processes)
        done = step + 1
        logged = done % recipe.train.log_every_steps == 0 or done == steps
        if logged:
            means, rate = window.flush(accelerator)
            record = {"step": done, **means, "lr": run.scheduler.get_last_lr()[0], **pruner.log_values(),
                      "samples_per_second": rate}
            if main:
                log.write(record)
            guards.check_finite_loss(record, recipe.train.lr)
            accelerator.log(tracking.train_scalars(record), step=done)
            obs.on_step(done, record)
        if recipe.train.eval_every_steps and done % recipe.train.eval_every_steps == 0 and done < steps:
            t0 = time.perf_counter()
            with pruner.evaluation():
                metrics, _ = evaluate_all(run.task, accelerator.unwrap_model(model), run.data, run.tokenizer,
                                          recipe, accelerator.autocast)
                remaining = pruner.current_remaining_pct()
            eval_seconds += time.perf_counter() - t0
            if main:
                log.write({"step": done, "eval": metrics, "remaining_pct": remaining})
            accelerator.log(tracking.eval_scalars(metrics, remaining), step=done)
            obs.on_eval(done, metrics)
        saving = checkpoint.due(recipe.train, done)
        # Every process takes the same decision at the same step: saving is collective.
        stopping = stop.requested(accelerator, collective=logged or saving)
        if saving or stopping:
            saved = checkpoint.save(accelerator, run_dir, pruner, run.stream, checkpoint.LoopState(
                step=done, train_seconds=train_seconds(), eval_seconds=eval_seconds, window=window,
                metrics_bytes=log.path.stat().st_size if main and log.path.exists() else 0,
                tracking_id=loop.tracking_id), recipe.train.keep_checkpoints, data_sha256=run.data_sha256)
            if stopping:
                raise RunInterrupted(f"stopped by {stop.name} after step {done} of {steps}; checkpoint "
                                     f"saved in {saved}", stop.exit_code, str(saved))
    return train_seconds(), eval_seconds


def _finish(recipe: Recipe, run: Prepared, run_dir: Path, accelerator, obs: Observer, log: results.MetricsLog,
            train_seconds: float, eval_seconds: float) -> RunResult:
    """Bake the masks, evaluate, and (on the main process) save the model, its artifacts and the result."""
    obs.on_phase("final evaluation")
    final_model = accelerator.unwrap_model(run.model)
    guards.check_finite_weights(final_model)
    run.pruner.bake(final_model)
    t0 = time.perf_counter()
    prediction_counts: dict[str, dict[str, int]] = {}
    metrics, artifacts = evaluate_all(run.task, final_model, run.data, run.tokenizer, recipe, accelerator.autocast,
                                      prediction_counts)
    eval_seconds += time.perf_counter() - t0
    result = run_result(recipe, run, final_model, metrics, prediction_counts, train_seconds=train_seconds,
                        eval_seconds=eval_seconds, num_processes=accelerator.num_processes)
    obs.on_eval(run.steps, metrics)
    accelerator.log(tracking.eval_scalars(metrics, result.remaining_pct), step=run.steps)
    if accelerator.is_main_process:
        obs.on_phase("saving model")
        log.write({"step": run.steps, "eval": metrics, "remaining_pct": result.remaining_pct, "final": True})
        results.save_model_atomically(final_model, run.tokenizer, run_dir)
        for filename, content in artifacts.items():
            atomic_write_json(run_dir / filename, content)
        result.save(run_dir)
        checkpoint.remove_all(run_dir)
    return result
