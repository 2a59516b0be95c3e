"""The one training loop: every task and every pruner run through :func:`run`.

Its parts are public (:func:`build_optimizer`, :func:`train_step`, :func:`evaluate_all`) and shared
with the benchmarks and tests; :func:`run` / ``_run`` / ``_train`` are the loop's phases (claim the
folder, train, publish), kept together so that the order of a run reads top to bottom. Checkpoints,
signals, trackers, guards and multi-process rules live in their own modules beside this one."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from movprune import distributed, pruners, results, run_folder, tasks
from movprune.errors import DataError, RecipeError, RunInterrupted
from movprune.io import atomic_write_json, atomic_write_text
from movprune.models import check_encoder, resolve_model
from movprune.pruners.counting import remaining_by_module, remaining_pct
from movprune.recipe import Recipe, TrainConfig
from movprune.results import RunResult
from movprune.tasks.base import TaskData
from movprune.training import checkpoint, distill, guards, preemption, processes, resume_checks, tracking
from movprune.training.data import check_data, data_digests, prepare_data
from movprune.training.observer import Observer, SilentObserver


def check_inputs(recipe: Recipe, source: str = "recipe") -> None:
    """Fail early, before any training, on missing data files or an unresolvable model."""
    task = tasks.get_task(recipe.task, recipe.dataset)
    splits = [recipe.train_split] + ([recipe.eval_split] if recipe.eval_split
                                     else [s for s, _ in task.default_eval_splits()])
    problems = task.check_data(recipe.data_dir, splits)
    if problems:
        raise RecipeError(source, problems)
    guards.check_output_dir(recipe.output_dir, source)
    check_encoder(resolve_model(recipe.model))
    distill.check_teacher(recipe)
    check_data(task, recipe)
    tracking.check_available(recipe, source)


def total_steps(recipe: Recipe, num_train: int) -> int:
    """Optimizer steps of the run: ``max_steps``, else ``epochs`` over the training set.

    ``train.batch_size`` is the global batch, so the count does not depend on how many processes
    share it.
    """
    if recipe.train.max_steps is not None:
        return recipe.train.max_steps
    per_epoch = math.ceil(num_train / recipe.train.batch_size)
    return max(1, math.ceil(recipe.train.epochs * per_epoch))


def calibration_batches(task: tasks.Task, data: TaskData, tokenizer, recipe: Recipe, samples: int,
                        device: torch.device | str) -> list[dict[str, Any]]:
    """``samples`` examples of the train split (all of them when it is smaller) in batches of
    ``train.batch_size``, on ``device``: the first ones of a permutation drawn from the recipe's seed,
    so every process and every rerun calibrates on the same examples."""
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(recipe.seed))[:samples]
    collate = task.collate(tokenizer)
    size = recipe.train.batch_size
    return [{k: v.to(device) for k, v in collate([data.train[int(i)] for i in order[start:start + size]]).items()}
            for start in range(0, len(order), size)]


def build_optimizer(model: torch.nn.Module, pruner: pruners.Pruner, train: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the model's trainable weights (no decay on biases and LayerNorms) and the
    pruner's own groups (scores with their learning rate)."""
    extra = pruner.parameter_groups()
    taken = {id(p) for g in extra for p in g["params"]}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in taken:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": train.weight_decay, "name": "weights"},
              {"params": no_decay, "weight_decay": 0.0, "name": "weights_no_decay"}, *extra]
    return torch.optim.AdamW(groups, lr=train.lr)


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


def evaluate_all(task: tasks.Task, model, data: TaskData, tokenizer, recipe: Recipe, autocast,
                 prediction_counts: dict[str, dict[str, int]] | None = None):
    """Evaluate on every evaluation set; returns (metrics, artifacts). ``prediction_counts``, when
    given, receives each set's predicted-class histogram (classification tasks)."""
    metrics: dict[str, float] = {}
    artifacts: dict[str, Any] = {}
    for evalset in data.evals:
        out = task.evaluate(model, evalset, tokenizer, recipe.train.eval_batch_size, autocast)
        metrics.update(out.metrics)
        artifacts.update(out.artifacts)
        if prediction_counts is not None and out.prediction_counts is not None:
            prediction_counts[evalset.split] = out.prediction_counts
    return metrics, artifacts


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
    check_inputs(recipe)
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
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    main = accelerator.is_main_process
    log = results.MetricsLog(run_dir)

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
        pruner.calibrate(model, calibration_batches(task, data, tokenizer, recipe, pruner.calibration_samples(),
                                                    accelerator.device))
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
        if main:
            checkpoint.truncate_metrics(run_dir, loop.metrics_bytes)
    if recipe.train.report_to:
        tracking.start(accelerator, recipe, run_dir, resume_step=loop.step if resume_from else None,
                       tracking_id=loop.tracking_id)
        cleanup.callback(tracking.finish, accelerator)  # however the run ends

    obs.on_start(steps, recipe.run_dir)
    model.train()
    window: dict[str, torch.Tensor] = loop.window
    window_n, window_samples = loop.window_n, loop.window_samples
    window_start = start = time.perf_counter()
    eval_seconds = loop.eval_seconds
    for step in range(loop.step, steps):
        batch = next(stream)
        parts = train_step(model, batch, step, pruner=pruner, optimizer=optimizer, scheduler=scheduler,
                           max_grad_norm=recipe.train.max_grad_norm, accelerator=accelerator,
                           distiller=distiller)
        for k, v in parts.items():
            window[k] = window[k] + v if k in window else v
        window_n += 1
        window_samples += len(batch["input_ids"]) * accelerator.num_processes
        done = step + 1
        if done % recipe.train.log_every_steps == 0 or done == steps:
            now = time.perf_counter()
            window = processes.mean_across_processes(accelerator, window)
            record = {"step": done, **{k: float(v) / window_n for k, v in window.items()},
                      "lr": scheduler.get_last_lr()[0], **pruner.log_values(),
                      "samples_per_second": window_samples / max(now - window_start, 1e-9)}
            if main:
                log.write(record)
            guards.check_finite_loss(record, recipe.train.lr)
            accelerator.log(tracking.train_scalars(record), step=done)
            obs.on_step(done, record)
            window, window_n, window_samples, window_start = {}, 0, 0, time.perf_counter()
        if recipe.train.eval_every_steps and done % recipe.train.eval_every_steps == 0 and done < steps:
            t0 = time.perf_counter()
            pruner.prepare_eval()
            metrics, _ = evaluate_all(task, accelerator.unwrap_model(model), data, tokenizer, recipe,
                                      accelerator.autocast)
            eval_seconds += time.perf_counter() - t0
            if main:
                log.write({"step": done, "eval": metrics, "remaining_pct": pruner.current_remaining_pct()})
            accelerator.log(tracking.eval_scalars(metrics, pruner.current_remaining_pct()), step=done)
            obs.on_eval(done, metrics)
        if checkpoint.due(recipe.train, done) or stop.requested(accelerator):
            elapsed = loop.train_seconds + time.perf_counter() - start - (eval_seconds - loop.eval_seconds)
            saved = checkpoint.save(accelerator, run_dir, pruner, stream, checkpoint.LoopState(
                done, elapsed, eval_seconds, window, window_n, window_samples,
                log.path.stat().st_size if main and log.path.exists() else 0, loop.tracking_id),
                recipe.train.keep_checkpoints, data_sha256=digests)
            if stop.signum is not None:
                raise RunInterrupted(f"stopped by {stop.name} after step {done} of {steps}; checkpoint "
                                     f"saved in {saved}", stop.exit_code, str(saved))
    train_seconds = loop.train_seconds + time.perf_counter() - start - (eval_seconds - loop.eval_seconds)

    obs.on_phase("final evaluation")
    final_model = accelerator.unwrap_model(model)
    guards.check_finite_weights(final_model)
    pruner.bake(final_model)
    t0 = time.perf_counter()
    prediction_counts: dict[str, dict[str, int]] = {}
    metrics, artifacts = evaluate_all(task, final_model, data, tokenizer, recipe, accelerator.autocast,
                                      prediction_counts)
    eval_seconds += time.perf_counter() - t0
    measured = remaining_pct(final_model)
    by_module = remaining_by_module(final_model)
    mask_digests = processes.check_masks_agree(final_model)
    obs.on_eval(steps, metrics)
    accelerator.log(tracking.eval_scalars(metrics, measured), step=steps)

    result = RunResult.checked({
        "name": recipe.run_name, "task": recipe.task, "model": recipe.model, "pruner": recipe.pruner.method,
        "pruner_config": recipe.pruner.model_dump(mode="json"),
        "target_remaining_pct": pruner.target_remaining_pct, "remaining_pct": measured,
        "remaining_by_module": by_module, "metrics": metrics, "metric_names": list(task.metric_names),
        "pruner_summary": pruner.summary(),
        "prediction_counts": prediction_counts,
        "warnings": guards.result_warnings(pruner.target_remaining_pct, pruner.summary(), prediction_counts),
        "seed": recipe.seed, "steps": steps, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
        "bf16": recipe.train.bf16, "num_processes": accelerator.num_processes,
        "mask_sha256_by_process": mask_digests,
        "distill": distiller.result_entry() if distiller else None, "versions": results.versions(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }, f"run {recipe.run_name}")
    if main:
        obs.on_phase("saving model")
        log.write({"step": steps, "eval": metrics, "remaining_pct": measured, "final": True})
        results.save_model_atomically(final_model, tokenizer, run_dir)
        for filename, content in artifacts.items():
            atomic_write_json(run_dir / filename, content)
        result.save(run_dir)
        checkpoint.remove_all(run_dir)
    return result
