"""Which layers are pruned, and how many of their weights remain."""

from __future__ import annotations

import torch
from torch import nn

# Children of a Hugging Face base model that the paper leaves dense (ELECTRA's projection of its
# smaller embeddings to the hidden size belongs to the embeddings).
_DENSE_PARTS = ("embeddings", "pooler", "embeddings_project")


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` of the encoder: inside ``model.base_model`` but not its embeddings or
    pooler. Task heads live outside the base model and so stay dense. Keys are names in ``model``."""
    base = getattr(model, "base_model", model)
    prefix = ""
    for name, module in model.named_modules():
        if module is base:
            prefix = f"{name}." if name else ""
            break
    found = {}
    for name, module in base.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if name.split(".")[0] in _DENSE_PARTS:
            continue
        found[prefix + name] = module
    return found


@torch.no_grad()
def remaining_by_module(model: nn.Module) -> dict[str, float]:
    """Remaining weights (non-zero entries, in %) of each pruned matrix, as the model computes them."""
    return {
        name: 100.0 * torch.count_nonzero(lin.weight).item() / lin.weight.numel()
        for name, lin in prunable_linears(model).items()
    }


@torch.no_grad()
def remaining_counts(model: nn.Module) -> tuple[int, int]:
    """(non-zero, total) entries over all encoder Linear weights."""
    kept = total = 0
    for lin in prunable_linears(model).values():
        w = lin.weight
        kept += int(torch.count_nonzero(w).item())
        total += w.numel()
    return kept, total


def remaining_pct(model: nn.Module) -> float:
    """The paper's "remaining weights": non-zero encoder Linear weights / all of them, in %."""
    kept, total = remaining_counts(model)
    if total == 0:
        raise ValueError("the model has no encoder nn.Linear layers to measure")
    return 100.0 * kept / total
