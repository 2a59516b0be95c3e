"""The training loop's multi-process rules that need the recipe or the model: the global batch's
split, logged losses averaged over processes, masks compared across processes (the process-level
mechanics are in :mod:`movprune.distributed`)."""

from __future__ import annotations

from typing import Any

import torch

from movprune import distributed
from movprune.errors import DistributedError, RecipeError
from movprune.pruners.counting import prunable_linears
from movprune.recipe import Recipe


def check_batch_split(recipe: Recipe, num_processes: int) -> None:
    """``train.batch_size`` is the global batch: it must split evenly over the processes."""
    if distributed.per_process_batch_size(recipe.train.batch_size, num_processes) is None:
        b = recipe.train.batch_size
        fit = -(-b // num_processes) * num_processes
        raise RecipeError(f"train.batch_size={b}", [
            f"the global batch is split across the {num_processes} processes of this launch, so it must "
            f"be a multiple of {num_processes}: set train.batch_size={fit} (or launch a number of "
            f"processes that divides {b})"])


def mean_across_processes(accelerator: Any, window: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The logged loss parts averaged over the processes (each saw its share of the global batch):
    one collective per logged step, none per training step."""
    if accelerator.num_processes == 1 or not window:
        return window
    keys = sorted(window)
    stacked = torch.stack([window[k].float().reshape(()) for k in keys]).to(accelerator.device)
    reduced = accelerator.reduce(stacked, reduction="mean")
    return dict(zip(keys, reduced.cpu()))


def check_masks_agree(model: torch.nn.Module) -> list[str]:
    """Digests of the baked masks of every process; raises when the processes disagree (the run
    would then depend on which process saved it)."""
    digest = distributed.mask_digest([layer.weight for layer in prunable_linears(model).values()])
    digests = distributed.gather_in_order([digest])
    if len(set(digests)) > 1:
        raise DistributedError(
            f"the {len(digests)} processes ended with different masks ({', '.join(d[:12] for d in digests)}); "
            "the run is not valid. Please report this with the recipe and the launch command.")
    return digests
