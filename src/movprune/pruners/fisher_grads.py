"""Per-example gradients of head and neuron mask variables, for the Fisher information.

A mask variable ``m = 1`` multiplies each attention head's output (its slice of the attention-output
matrix's input) and each FFN neuron's activation (its entry of the FFN-out matrix's input). Forward
pre-hooks on those two matrices insert one such variable *per example* (shape ``(batch, groups)``),
so a single backward pass of a batch gives every example's own gradient: the batch loss is the
mean of the examples' losses, so ``dL_e/dm = batch_size * dL/dm_e``. Weights need no gradient
here; they are frozen for the pass, so autograd only computes what leads to the masks.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager

import torch
from torch import nn

from movprune.pruners.grouping import Grouping

#: Member of a grouping whose *input* the mask variables multiply: the attention output (index 3
#: after Q, K, V) for heads, FFN out (index 1 after FFN in) for neurons.
_PROBED_MEMBER = {4: 3, 2: 1}


def probed_member(grouping: Grouping) -> int:
    """Index of the member whose input columns are the grouping's groups (attention output, FFN out)."""
    return _PROBED_MEMBER[len(grouping.members)]


def group_width(grouping: Grouping) -> int:
    """Input columns one group covers in the probed matrix (the head size; 1 for a neuron)."""
    return grouping.members[probed_member(grouping)].block[1]


@contextmanager
def frozen_weights(model: nn.Module):
    """Switch off ``requires_grad`` on every parameter for the block, then restore it."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _probe(grouping: Grouping, store: list[torch.Tensor]):
    groups, width = grouping.num_groups, group_width(grouping)

    def hook(module: nn.Module, args: tuple):
        x = args[0]
        m = torch.ones(x.shape[0], groups, dtype=x.dtype, device=x.device, requires_grad=True)
        store.append(m)
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (groups, 1)
        return (x.reshape(*x.shape[:-1], groups, width).mul(m.reshape(shape)).reshape(x.shape), *args[1:])

    return hook


def mask_gradients(model: nn.Module, groupings: dict[str, Grouping], linears: dict[str, nn.Linear],
                   batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-example gradients of the task loss with respect to each grouping's mask variables at 1:
    grouping name -> ``(examples, groups)`` float64 tensor (examples in batch order).

    ``model`` should be in eval mode (no dropout), so the gradients are those of the model as it
    will be evaluated.
    """
    stores: dict[str, list[torch.Tensor]] = {name: [] for name in groupings}
    handles = [linears[g.members[probed_member(g)].name].register_forward_pre_hook(_probe(g, stores[name]))
               for name, g in groupings.items()]
    out: dict[str, list[torch.Tensor]] = {name: [] for name in groupings}
    try:
        with frozen_weights(model), torch.enable_grad():
            for batch in batches:
                for store in stores.values():
                    store.clear()
                loss = model(**batch).loss
                size = next(iter(stores.values()))[0].shape[0]
                variables = [stores[name][0] for name in groupings]
                grads = torch.autograd.grad(loss, variables, allow_unused=True)
                for name, m, g in zip(groupings, variables, grads):
                    g = torch.zeros_like(m) if g is None else g
                    out[name].append(g.detach().double() * size)
    finally:
        for h in handles:
            h.remove()
    return {name: torch.cat(parts) for name, parts in out.items()}
