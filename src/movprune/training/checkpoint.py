"""Checkpoints a run resumes from exactly: ``<run_dir>/checkpoints/step-<N>/``.

A checkpoint holds what the next step depends on:

* ``model.safetensors`` (weights and the pruners' scores, which are parameters of the
  parametrizations), ``optimizer.bin``, ``custom_checkpoint_0.pkl`` (the LR scheduler: it stays outside
  ``accelerator.prepare`` and is registered for checkpointing), ``random_states_<process>.pkl``
  (Python, NumPy, torch and accelerator RNGs): accelerate's ``save_state``;
* ``pruner_state.json`` + ``pruner_state.safetensors``: :meth:`Pruner.state_dict` (schedule position,
  controller λ and integrator, calibration, top-k trackers), numbers as JSON, tensors as safetensors;
* ``trainer_state.json`` + ``trainer_state.safetensors``: the step, the position in the data order
  (epoch, batches taken, the shuffling generator's state when the epoch began), the partly filled
  logging window, the length of ``metrics.jsonl`` at that step, time spent so far.

It is written into a hidden ``.step-<N>.partial`` folder, flushed to disk and renamed into place, so
a kill while writing leaves the previous checkpoint as the newest usable one. ``files.json`` lists
every other file with its size (a truncated or missing file makes the checkpoint unusable, and a
resume falls back to an older one), and the trainer state holds the SHA-256 of the data files the
run reads (a resume on changed data is refused).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from movprune import identity, results
from movprune.errors import RecipeError, RunFailedError, StorageError
from movprune.io import writing
from movprune.recipe import Recipe, TrainConfig
from movprune.training.window import LogWindow

CHECKPOINTS_DIR = "checkpoints"
PRUNER_STATE = "pruner_state"
TRAINER_STATE = "trainer_state"
#: ``{file name: size in bytes}`` of every other file of the checkpoint, written last.
MANIFEST = "files.json"
#: 2: persistent moving averages (sensitivity, bias correction) in the model state, the data files'
#: SHA-256 and files.json; a checkpoint of another format is refused, never half-loaded.
FORMAT_VERSION = 2
_NAME = re.compile(r"^step-(\d+)$")

# --------------------------------------------------------------------------------------------
# Finding checkpoints


def checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """The complete checkpoints of ``run_dir``, oldest first, as (step, folder)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of ``run_dir`` (None when it has none)."""
    found = checkpoints(run_dir)
    return found[-1][1] if found else None


def due(train: TrainConfig, done: int) -> bool:
    """Whether the recipe asks for a checkpoint after ``done`` steps."""
    return bool(train.save_every_steps) and done % train.save_every_steps == 0


# --------------------------------------------------------------------------------------------
# The recipe a run started with


def check_same_recipe(run_dir: str | Path, recipe: Recipe) -> None:
    """Raise :class:`RecipeError` naming every key that changes the numbers (:mod:`movprune.identity`)
    whose value differs from the recipe the run in ``run_dir`` started with; output and operational
    keys (where results go, checkpointing, logging, trackers, mid-run evaluations) may change."""
    source = str(Path(run_dir) / results.RECIPE_FILE)
    try:
        started = identity.load_saved_recipe(run_dir)
    except RecipeError as e:
        raise RecipeError(source, [f"cannot read the recipe this run started with ({'; '.join(e.problems)}); "
                                   "start over with --force"]) from None
    changed = identity.same_experiment(started, recipe)
    if changed:
        old, new = identity.settings(started), identity.settings(recipe)
        diffs = ", ".join(f"{k} (started with {old.get(k)!r}, now {new.get(k)!r})" for k in changed)
        raise RecipeError(source, [
            f"cannot resume: the recipe differs from the one this run started with: {diffs}; resume with "
            "the original settings, or start over with --force"])


# --------------------------------------------------------------------------------------------
# The data order


class BatchStream:
    """The training batches, epoch after epoch, knowing where in the data order it is.

    The shuffling ``generator`` (the one the loader's sampler draws from) is recorded when each
    epoch begins; a resumed stream restores it and skips the batches already taken, so it yields
    the batches an uninterrupted run would have.
    """

    def __init__(self, loader: Any, generator: torch.Generator, accelerator: Any):
        self.loader = loader
        self.generator = generator
        self.accelerator = accelerator
        self.epoch = 0
        self.batches_in_epoch = 0
        self.epoch_start_state = generator.get_state()
        self._restore_state: torch.Tensor | None = None
        self._it: Iterator | None = None

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Any:
        while True:
            if self._it is None:
                self._start_epoch()
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                self.epoch += 1
                self.batches_in_epoch = 0
                continue
            self.batches_in_epoch += 1
            return batch

    def _start_epoch(self) -> None:
        if self._restore_state is not None:
            self.generator.set_state(self._restore_state)
            self._restore_state = None
        self.epoch_start_state = self.generator.get_state()
        loader = self.loader
        if self.batches_in_epoch:
            loader = self.accelerator.skip_first_batches(self.loader, self.batches_in_epoch)
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.epoch)
        self._it = iter(loader)

    def position(self) -> tuple[dict[str, int], torch.Tensor]:
        """(epoch and batches taken in it, the generator's state when the epoch began)."""
        return {"epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch}, self.epoch_start_state

    def restore(self, position: dict[str, int], epoch_start_state: torch.Tensor) -> None:
        """Continue from :meth:`position` (before the first batch is taken)."""
        self.epoch = int(position["epoch"])
        self.batches_in_epoch = int(position["batches_in_epoch"])
        self._restore_state = epoch_start_state
        self._it = None


# --------------------------------------------------------------------------------------------
# Writing and reading


@dataclass
class LoopState:
    """The training loop's own state at a step boundary."""

    step: int
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    window: LogWindow = field(default_factory=LogWindow)
    metrics_bytes: int = 0
    tracking_id: str | None = None


def _split_tensors(data: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """``data`` with every tensor replaced by ``{"__tensor__": key}`` and stored in ``tensors``."""
    if isinstance(data, torch.Tensor):
        tensors[prefix] = data.detach().cpu().clone()  # clone: two entries may share storage
        return {"__tensor__": prefix}
    if isinstance(data, dict):
        return {k: _split_tensors(v, tensors, f"{prefix}{'.' if prefix else ''}{k}") for k, v in data.items()}
    return data


def _join_tensors(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(data, dict):
        if set(data) == {"__tensor__"}:
            return tensors[data["__tensor__"]]
        return {k: _join_tensors(v, tensors) for k, v in data.items()}
    return data


def write_state(folder: Path, stem: str, state: dict[str, Any]) -> None:
    """``state`` as ``<stem>.json`` (numbers, strings, nested dicts) and ``<stem>.safetensors`` (its tensors)."""
    tensors: dict[str, torch.Tensor] = {}
    plain = _split_tensors(state, tensors)
    (folder / f"{stem}.json").write_text(json.dumps(plain, indent=1) + "\n", encoding="utf-8")
    save_file(tensors, str(folder / f"{stem}.safetensors"))


def read_state(folder: Path, stem: str) -> dict[str, Any]:
    """What :func:`write_state` wrote."""
    plain = json.loads((folder / f"{stem}.json").read_text(encoding="utf-8"))
    return _join_tensors(plain, load_file(str(folder / f"{stem}.safetensors")))


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_partial(run_dir: str | Path) -> None:
    """Delete checkpoint folders a kill left half-written (they are never read)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if root.is_dir():
        for path in root.iterdir():
            if path.is_dir() and path.name.startswith(".step-"):
                shutil.rmtree(path)


def save(accelerator: Any, run_dir: str | Path, pruner: Any, stream: BatchStream, loop: LoopState,
         keep: int, data_sha256: dict[str, str] | None = None) -> Path:
    """Write ``checkpoints/step-<loop.step>/`` completely or not at all, then delete all but the newest
    ``keep`` checkpoints. Every process calls it (accelerate saves each process's RNG state).
    ``data_sha256`` (path -> SHA-256 of the data files) is kept for :func:`check_same_data`. A full
    disk is a :class:`StorageError` naming the checkpoint (its partial folder is removed)."""
    final = Path(run_dir) / CHECKPOINTS_DIR / f"step-{loop.step}"
    try:
        with writing(final):
            return _save(accelerator, run_dir, pruner, stream, loop, keep, data_sha256)
    except StorageError:
        shutil.rmtree(final.parent / f".step-{loop.step}.partial", ignore_errors=True)
        raise


def _save(accelerator: Any, run_dir: str | Path, pruner: Any, stream: BatchStream, loop: LoopState,
          keep: int, data_sha256: dict[str, str] | None) -> Path:
    root = Path(run_dir) / CHECKPOINTS_DIR
    final = root / f"step-{loop.step}"
    tmp = root / f".step-{loop.step}.partial"
    main = accelerator.is_main_process
    if main:
        root.mkdir(parents=True, exist_ok=True)
        remove_partial(run_dir)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if main:
        write_state(tmp, PRUNER_STATE, pruner.state_dict())
        position, generator_state = stream.position()
        write_state(tmp, TRAINER_STATE, {
            "format_version": FORMAT_VERSION, "step": loop.step, "data": position,
            "data_generator_state": generator_state, "train_seconds": loop.train_seconds,
            "eval_seconds": loop.eval_seconds, "window": dict(loop.window.parts), "window_n": loop.window.steps,
            "window_samples": loop.window.samples, "metrics_bytes": loop.metrics_bytes,
            "tracking_id": loop.tracking_id, "num_processes": accelerator.num_processes,
            "versions": results.versions(), "data_sha256": data_sha256 or {}})
    accelerator.wait_for_everyone()
    if main:
        sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps(sizes, indent=1) + "\n", encoding="utf-8")
        _fsync_tree(tmp)
        if final.exists():  # a checkpoint of this very step (a signal on a save step): replace it
            old = root / f".step-{loop.step}.old"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
        _fsync_tree(root)
        for _, stale in checkpoints(run_dir)[:-keep]:
            shutil.rmtree(stale)
    accelerator.wait_for_everyone()
    return final


def load(accelerator: Any, checkpoint: Path, pruner: Any, stream: BatchStream) -> LoopState:
    """Restore model, optimizer, scheduler, RNGs, pruner and data position from ``checkpoint``;
    returns the loop's state. Raises :class:`RunFailedError` when the checkpoint cannot be used."""
    try:
        trainer = read_state(checkpoint, TRAINER_STATE)
        pruner_state = read_state(checkpoint, PRUNER_STATE)
    except (OSError, ValueError, KeyError) as e:
        raise RunFailedError(f"{checkpoint}: unreadable checkpoint ({e}); delete it to resume from an "
                             "older one, or start over with --force") from None
    if trainer.get("format_version") != FORMAT_VERSION:
        raise RunFailedError(f"{checkpoint}: checkpoint format {trainer.get('format_version')} is not "
                             f"{FORMAT_VERSION} (written by another movprune); start over with --force")
    if trainer["num_processes"] != accelerator.num_processes:
        raise RunFailedError(
            f"{checkpoint}: written by {trainer['num_processes']} process(es), resumed with "
            f"{accelerator.num_processes}; the data order would differ: resume with "
            f"{trainer['num_processes']} process(es)")
    try:
        accelerator.load_state(str(checkpoint))
        _check_rng_restored(checkpoint, accelerator.process_index)
        pruner.load_state_dict(pruner_state)
    except (RuntimeError, KeyError, ValueError) as e:  # a state of another shape than this run's
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunFailedError(f"{checkpoint}: does not fit this run ({first}); start over with --force") from None
    stream.restore(trainer["data"], trainer["data_generator_state"])
    return LoopState(step=int(trainer["step"]), train_seconds=float(trainer["train_seconds"]),
                     eval_seconds=float(trainer["eval_seconds"]),
                     window=LogWindow(parts=dict(trainer["window"]), steps=int(trainer["window_n"]),
                                      samples=int(trainer["window_samples"])),
                     metrics_bytes=int(trainer["metrics_bytes"]), tracking_id=trainer.get("tracking_id"))


def _check_rng_restored(checkpoint: Path, process_index: int) -> None:
    # accelerate logs and carries on when it cannot restore the RNGs; a resumed run would then
    # silently differ from an uninterrupted one.
    from accelerate.utils import load as accelerate_load

    path = checkpoint / f"random_states_{process_index}.pkl"
    try:
        saved = accelerate_load(path)["torch_manual_seed"]
    except Exception as e:
        raise RunFailedError(f"{path}: the random states cannot be read ({e})") from None
    if not torch.equal(saved, torch.get_rng_state()):
        raise RunFailedError(f"{path}: the random states were not restored")


def truncate_metrics(run_dir: str | Path, metrics_bytes: int) -> None:
    """Cut ``metrics.jsonl`` back to its length at the checkpoint: the steps after it run again."""
    path = Path(run_dir) / results.METRICS_FILE
    if path.exists() and path.stat().st_size > metrics_bytes:
        with open(path, "r+b") as f:
            f.truncate(metrics_bytes)


def remove_all(run_dir: str | Path) -> None:
    """Delete the checkpoints of a finished run (its model and result are saved; nothing resumes)."""
    shutil.rmtree(Path(run_dir) / CHECKPOINTS_DIR, ignore_errors=True)

