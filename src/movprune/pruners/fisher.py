"""``fisher``: one-shot structured pruning of whole attention heads and FFN neurons, decided on
calibration examples with no training (after Kwon et al. 2022, *A Fast Post-Training Pruning
Framework for Transformers*).

:meth:`FisherPruner.calibrate` does it all, before the first training step:

1. the per-example gradients of a mask variable per head and per neuron (:mod:`.fisher_grads`) give
   the diagonal empirical Fisher ``F_ii = sum_e (dL_e/dm_i)^2`` and, per layer, the Fisher block;
2. the search (:mod:`.fisher_search`) keeps the heads and neurons with the most Fisher importance
   within ``remaining_pct`` of the encoder Linear weights (and ``flops_pct`` of the FLOPs, and
   ``latency_ms`` as a measured latency table predicts it, :mod:`.latency`);
3. ``rearrange``: greedy swaps within each layer on its Fisher block;
4. ``rescale``: layer-wise least-squares scales of the kept heads and neurons (:mod:`.rescale`).

The mask then stays fixed (:class:`OneShotSchedule`): ``train.max_steps: 0`` publishes the pruned
model as is; with steps, the kept weights train under the fixed mask.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from movprune.models import ResolvedModel
from movprune.pruners import latency_budget
from movprune.pruners.base import MaskedWeight, Pruner
from movprune.pruners.config import BasePrunerConfig, FisherConfig
from movprune.pruners.counting import prunable_linears
from movprune.pruners.fisher_grads import mask_gradients
from movprune.pruners.fisher_search import (
    Budget,
    LayerwiseBudget,
    pruned_objective,
    rearrange,
    search_counts,
    top_masks,
)
from movprune.pruners.grouping import Grouping
from movprune.pruners.latency import LatencyTable, TableDims
from movprune.pruners.rescale import LayerParts, rescale_layers
from movprune.pruners.schedule import OneShotSchedule, Schedule
from movprune.pruners.topk import kept_count


class FixedGroupMask(MaskedWeight):
    """A 0/1 mask per group, set once by calibration (dense until then, or while ``active`` is off)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape
        self.keep: torch.Tensor | None = None
        self.active = True

    def is_dense(self) -> bool:
        return self.keep is None or not self.active

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight if self.is_dense() else weight * self.mask(weight)

    def mask(self, weight: torch.Tensor) -> torch.Tensor:
        if self.keep is None:
            return torch.ones(self.shape, dtype=weight.dtype, device=weight.device)
        return self.keep.to(dtype=weight.dtype, device=weight.device)


def layer_costs(attention: Grouping, ffn: Grouping, seq_tokens: int) -> dict[str, tuple[int, int]]:
    """(per head, per neuron) cost of one layer: encoder Linear weights, and multiply-accumulates of
    one example of ``seq_tokens`` tokens (a head: its Q, K, V rows and O columns on every token, and
    its ``T x T`` scores and weighted sum; a neuron: its FFN-in row and FFN-out column)."""
    size, hidden = attention.members[0].block
    t = seq_tokens
    return {"weights": (attention.group_numel, ffn.group_numel),
            "flops": (4 * t * hidden * size + 2 * t * t * size, t * ffn.group_numel)}


class FisherPruner(Pruner):
    """Heads and neurons kept by their Fisher importance on calibration examples, in one shot."""

    name = "fisher"
    config: FisherConfig
    masks: dict[str, FixedGroupMask]

    def __init__(self, config: BasePrunerConfig, total_steps: int):
        super().__init__(config, total_steps)
        self._summary: dict[str, Any] = {}
        self._latency: tuple[LatencyTable, str] | None = None  # the table and its sha256, read at attach

    @classmethod
    def check(cls, config: BasePrunerConfig) -> list[str]:
        problems = super().check(config)
        if config.pattern != "hybrid":
            problems.append(f"pruner.pattern: method 'fisher' prunes whole attention heads and FFN neurons, so "
                            f"its pattern is hybrid, not '{config.pattern}'; remove the key or set "
                            "pruner.pattern=hybrid")
        return problems + latency_budget.key_problems(config)

    @classmethod
    def needs_target(cls, config: BasePrunerConfig) -> bool:
        return config.latency_ms is None and config.flops_pct is None

    @classmethod
    def input_problems(cls, config: BasePrunerConfig, model: ResolvedModel) -> list[str]:
        if config.latency_table is None:
            return []
        return latency_budget.input_problems(config, latency_budget.dims_of_config(model.load_config()))

    @property
    def target_remaining_pct(self) -> float | None:
        """None when ``remaining_pct`` is 100 (or unset) and a FLOPs or latency budget decides: the run
        is placed by the % of weights it keeps, not as a dense one."""
        c = self.config
        if (c.remaining_pct is None or c.remaining_pct >= 100.0) and (c.latency_ms is not None
                                                                      or c.flops_pct is not None):
            return None
        return c.remaining_pct

    def make_schedule(self) -> Schedule:
        return OneShotSchedule((self.config.remaining_pct or 100.0) / 100.0)

    def make_group_mask(self, grouping: Grouping) -> FixedGroupMask:
        return FixedGroupMask(grouping.score_shape)

    def calibration_samples(self) -> int:
        return self.config.calibration_samples

    def attach(self, model: nn.Module) -> None:
        super().attach(model)
        if self.config.latency_table is not None:
            self._latency = self.read_latency_table()

    def read_latency_table(self) -> tuple[LatencyTable, str]:
        """The configured table and its sha256, checked against this model's shape."""
        pairs = self.layer_pairs()
        att, ffn = pairs[0][1], pairs[0][2]
        size, hidden = att.members[0].block
        dims = TableDims(num_hidden_layers=len(pairs), num_attention_heads=att.num_groups, attention_head_size=size,
                         hidden_size=hidden, intermediate_size=ffn.num_groups)
        return latency_budget.read_table(self.config, dims)

    # -- the layers as pairs of groupings -----------------------------------------------------------
    def layer_pairs(self) -> list[tuple[str, Grouping, Grouping]]:
        """(layer prefix, heads grouping, neurons grouping) per transformer layer, in order."""
        prefixes = [n[: -len("attention")] for n in self.groupings if n.endswith("attention")]
        return [(p, self.groupings[p + "attention"], self.groupings[p + "ffn"]) for p in prefixes]

    @contextmanager
    def dense(self) -> Iterator[None]:
        """The model computes unpruned inside the block (the teacher of the rescaling)."""
        for m in self.masks.values():
            m.active = False
        try:
            yield
        finally:
            for m in self.masks.values():
                m.active = True

    def budgets(self) -> list[Budget | LayerwiseBudget]:
        """The weight budget (``remaining_pct``) and, when set, the FLOPs budget (``flops_pct``) and the
        latency budget (``latency_ms``, less the latency of the model with no head and no neuron)."""
        c = self.config
        pairs = self.layer_pairs()
        costs = [layer_costs(a, f, c.flops_seq_tokens) for _, a, f in pairs]
        if any(cost != costs[0] for cost in costs):
            raise ValueError("method 'fisher' needs layers of one shape (heads and FFN of equal size in every layer)")
        heads = sum(a.num_groups for _, a, _ in pairs)
        neurons = sum(f.num_groups for _, _, f in pairs)
        out = []
        for name, pct in (("weights", c.remaining_pct), ("flops", c.flops_pct)):
            if pct is None:
                continue
            head, neuron = costs[0][name]
            out.append(Budget(name, head, neuron, kept_count(pct / 100.0, heads * head + neurons * neuron)))
        if c.latency_ms is not None:
            table = (self._latency or self.read_latency_table())[0]
            att, ffn = table.attention.fit, table.ffn.fit
            out.append(LayerwiseBudget("latency", tuple(att.predict_ms(k) for k in range(pairs[0][1].num_groups + 1)),
                                       tuple(ffn.predict_ms(k) for k in range(pairs[0][2].num_groups + 1)),
                                       c.latency_ms - table.empty_model_ms))
        return out

    # -- calibration ------------------------------------------------------------------------------
    def calibrate(self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> None:
        """Decide the mask (and the kept groups' scales) from ``batches``; see the module docstring."""
        start = time.perf_counter()
        # A sequence is passed over as it is: the loop's own checks for a stop request between
        # batches then run on every pass (gradients, rescaling), not only while copying it.
        batches = batches if isinstance(batches, Sequence) else list(batches)
        was_training = model.training
        model.eval()
        try:
            linears = prunable_linears(model)
            grads = mask_gradients(model, dict(self.groupings), linears, batches)
            fisher_diag = {name: g.pow(2).sum(0) for name, g in grads.items()}
            gradients_seconds = time.perf_counter() - start
            keep = self.search(fisher_diag)
            objective_before = objective_after = 0.0
            for name, g in grads.items():
                block = g.T @ g
                objective_before += pruned_objective(block, keep[name])
                if self.config.rearrange:
                    keep[name] = rearrange(block, keep[name])
                objective_after += pruned_objective(block, keep[name])
            for name, k in keep.items():
                self.masks[name].keep = k.reshape(self.masks[name].shape)
            rescale_start = time.perf_counter()
            rescaled = self.rescale(model, linears, keep, batches) if self.config.rescale else {}
            rescale_seconds = time.perf_counter() - rescale_start
        finally:
            model.train(was_training)
        samples = next(iter(grads.values())).shape[0]
        self._summary = self.describe(keep, samples, time.perf_counter() - start,
                                      objective_before, objective_after, rescaled)
        self._summary.update(gradients_seconds=round(gradients_seconds, 2), rescale_seconds=round(rescale_seconds, 2))

    def search(self, fisher_diag: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keep masks (bool per group) of the best heads and neurons within :meth:`budgets`."""
        heads = {n: v for n, v in fisher_diag.items() if n.endswith("attention")}
        neurons = {n: v for n, v in fisher_diag.items() if n.endswith("ffn")}
        found = search_counts(torch.cat([v.reshape(-1) for v in heads.values()]),
                              torch.cat([v.reshape(-1) for v in neurons.values()]), self.budgets(),
                              head_layers=_layer_ids(heads), neuron_layers=_layer_ids(neurons))
        return {**top_masks(heads, found.heads), **top_masks(neurons, found.neurons)}

    def rescale(self, model: nn.Module, linears: dict[str, nn.Linear], keep: dict[str, torch.Tensor],
                batches: list[dict[str, torch.Tensor]]) -> dict[str, dict[str, float]]:
        """Least-squares scales of the kept heads and neurons, folded into the weights; the relative
        reconstruction errors before and after, per layer prefix."""
        parts = []
        for prefix, att, ffn in self.layer_pairs():
            o = linears[att.members[3].name]
            f_in, f_out = (linears[m.name] for m in ffn.members)
            parts.append(LayerParts(model.get_submodule(prefix.rstrip(".")), o, f_in, f_out, att.num_groups,
                                    keep[att.name].reshape(-1), keep[ffn.name].reshape(-1)))
        report = rescale_layers(model, parts, batches, self.dense, self.config.rescale_damping)
        return {prefix: row for (prefix, _, _), row in zip(self.layer_pairs(), report)}

    def describe(self, keep: dict[str, torch.Tensor], samples: int, seconds: float, before: float, after: float,
                 rescaled: dict[str, dict[str, float]]) -> dict[str, Any]:
        """The ``pruner_summary`` of the run: how calibration decided the mask."""
        kept = {"weights": 0, "flops": 0}
        total = dict(kept)
        for _, att, ffn in self.layer_pairs():
            costs = layer_costs(att, ffn, self.config.flops_seq_tokens)
            for resource, (head, neuron) in costs.items():
                kept[resource] += int(keep[att.name].sum()) * head + int(keep[ffn.name].sum()) * neuron
                total[resource] += att.num_groups * head + ffn.num_groups * neuron
        return {
            "mask_decided_by": "calibration",
            "calibration_samples": samples,
            "calibration_seconds": round(seconds, 2),
            "heads_kept": {p: int(keep[a.name].sum()) for p, a, _ in self.layer_pairs()},
            "neurons_kept": {p: int(keep[f.name].sum()) for p, _, f in self.layer_pairs()},
            "kept_weights": kept["weights"],
            "flops_pct": round(100.0 * kept["flops"] / total["flops"], 3),
            "flops_seq_tokens": self.config.flops_seq_tokens,
            "rearrange_objective_before": before,
            "rearrange_objective_after": after,
            "rescale": rescaled,
            **self.describe_latency(keep),
        }

    def describe_latency(self, keep: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The latency the table predicts for the kept heads and neurons, and which table it was."""
        if self._latency is None:
            return {}
        pairs = self.layer_pairs()
        return latency_budget.describe(self.config, *self._latency, [int(keep[a.name].sum()) for _, a, _ in pairs],
                                       [int(keep[f.name].sum()) for _, _, f in pairs])

    # -- the rest of the life cycle ----------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return dict(self._summary)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "summary": self._summary,
                "keep": {name: m.keep.to(torch.uint8) for name, m in self.masks.items() if m.keep is not None}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._summary = state.get("summary", {})
        for name, k in state.get("keep", {}).items():
            self.masks[name].keep = k.bool()


def _layer_ids(by_layer: dict[str, torch.Tensor]) -> torch.Tensor:
    """The layer (position in ``by_layer``) of every entry of the tensors concatenated in order."""
    return torch.cat([torch.full((v.numel(),), i, dtype=torch.long) for i, v in enumerate(by_layer.values())])
