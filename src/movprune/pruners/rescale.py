"""Layer-wise least-squares rescaling of the kept heads and neurons (Kwon et al. 2022, ``rescale.py``).

Pruning a head or a neuron removes its term from a sum: the attention sub-layer computes, before its
LayerNorm, ``x + b_O + sum_h o_h`` (``o_h``: head ``h``'s output through its columns of the
attention-output matrix) and the FFN ``h + b_2 + sum_n a_n W_2[:, n]``. Giving each kept term a scale
``s`` and choosing the scales that best reproduce the *unpruned* model's pre-LayerNorm output, on the
pruned model's own inputs, repairs part of the loss. Layers are treated in order, each on the inputs
the already-rescaled layers before it produce (the teacher walks the unpruned model alongside).

Each problem is a small linear least squares ``min_s ||A s - r||^2 + λ ||s - 1||^2`` over the
non-padding tokens, solved in closed form from its normal equations (``A^T A`` and ``A^T r`` are
accumulated batch by batch, so ``A`` is never built; Cholesky, lstsq when singular). The damping
pulls the scales toward 1 (no rescaling), so the reconstruction error can only go down. The scales
are folded into the columns of the attention-output and FFN-out weights, so that baking leaves an
ordinary model.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
from torch import nn


class _Stop(Exception):
    """Raised by a hook to end a forward pass once what it needed is captured."""


@dataclass
class NormalEquations:
    """``A^T A``, ``A^T r`` and ``r^T r`` of one least-squares problem, accumulated over tokens."""

    size: int
    ata: torch.Tensor = field(init=False)
    atr: torch.Tensor = field(init=False)
    rtr: float = 0.0

    def __post_init__(self):
        self.ata = torch.zeros(self.size, self.size, dtype=torch.float64)
        self.atr = torch.zeros(self.size, dtype=torch.float64)

    def error(self, s: torch.Tensor) -> float:
        """``||A s - r||^2``."""
        return float(s @ self.ata @ s - 2 * s @ self.atr + self.rtr)

    def solve(self, damping: float) -> torch.Tensor:
        """The scales minimising ``||A s - r||^2 + λ ||s - 1||^2``, ``λ = damping * mean diag(A^T A)``."""
        lam = damping * float(torch.diagonal(self.ata).mean()) if self.size else 0.0
        lhs = self.ata + lam * torch.eye(self.size, dtype=torch.float64)
        rhs = self.atr + lam
        # Cholesky when positive definite (always, once damped): an SVD-based lstsq of the 1,536
        # neurons' system takes seconds of a loaded CPU, Cholesky a few milliseconds
        factor, info = torch.linalg.cholesky_ex(lhs)
        if int(info) == 0:
            return torch.cholesky_solve(rhs.unsqueeze(1), factor).squeeze(1)
        return torch.linalg.lstsq(lhs, rhs.unsqueeze(1), driver="gelsd").solution.squeeze(1)


@dataclass(frozen=True)
class LayerParts:
    """One transformer layer as the rescaling sees it: the layer module and its four matrices."""

    layer: nn.Module
    attn_out: nn.Linear
    ffn_in: nn.Linear  # its input is the attention sub-layer's output (the FFN's residual)
    ffn_out: nn.Linear
    heads: int
    kept_heads: torch.Tensor  # bool (heads,)
    kept_neurons: torch.Tensor  # bool (neurons,)


def _weight(linear: nn.Linear) -> torch.Tensor:
    """The unmasked weight (the parametrization's original when there is one)."""
    if hasattr(linear, "parametrizations"):
        return linear.parametrizations.weight.original
    return linear.weight


def _bias(linear: nn.Linear) -> torch.Tensor:
    if linear.bias is None:
        return torch.zeros(linear.out_features, dtype=torch.float64, device=_weight(linear).device)
    return linear.bias.double()


def _capture(modules: dict[str, nn.Module], stop_after: str | None = None):
    """Forward hooks recording each module's first input and output; optionally stop after one."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def make(key):
        def hook(module, args, output):
            seen[key] = (args[0].detach(), output.detach())
            if key == stop_after:
                raise _Stop
        return hook

    handles = [m.register_forward_hook(make(k)) for k, m in modules.items()]
    return seen, handles


def layer_inputs(model: nn.Module, first_layer: nn.Module, batches: list[dict[str, torch.Tensor]]):
    """What the encoder passes its first layer for each batch: (hidden states, other args, kwargs)."""
    captured = []

    def hook(module, args, kwargs):
        captured.append((args[0].detach(), args[1:], kwargs))
        raise _Stop

    handle = first_layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            try:
                model(**{k: v for k, v in batch.items() if k != "labels"})
            except _Stop:
                pass
    finally:
        handle.remove()
    return captured


def _run_layer(layer: nn.Module, hidden: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    out = layer(hidden, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def _tokens(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The non-padding tokens of a ``(batch, seq, features)`` tensor, as ``(tokens, features)`` float64."""
    return t.reshape(-1, t.shape[-1])[mask.reshape(-1)].double()


def head_equations(eq: NormalEquations, ctx: torch.Tensor, w_o: torch.Tensor, target: torch.Tensor,
                   heads: int, kept: torch.Tensor) -> None:
    """Add tokens to the heads' problem: ``ctx`` (tokens, heads*size) the attention-output matrix's
    input, ``w_o`` its weight, ``target`` (tokens, hidden) what the kept heads' sum should equal."""
    size = ctx.shape[1] // heads
    index = torch.nonzero(kept).reshape(-1)
    parts = torch.stack([ctx[:, h * size:(h + 1) * size] @ w_o[:, h * size:(h + 1) * size].T for h in index.tolist()],
                        dim=-1) if index.numel() else ctx.new_zeros(ctx.shape[0], w_o.shape[0], 0)
    eq.ata += torch.einsum("tdi,tdj->ij", parts, parts)
    eq.atr += torch.einsum("tdi,td->i", parts, target)
    eq.rtr += float(target.pow(2).sum())


def neuron_equations(eq: NormalEquations, act: torch.Tensor, w_2: torch.Tensor, target: torch.Tensor,
                     kept: torch.Tensor, w_gram: torch.Tensor | None = None) -> None:
    """Add tokens to the neurons' problem: ``act`` (tokens, neurons) the FFN-out matrix's input, ``w_2``
    its weight, ``target`` (tokens, hidden). Column ``n`` of ``A`` is ``act[:, n] * w_2[:, n]``, so
    ``A^T A = (act^T act) * (w_2^T w_2)`` and ``A^T r = sum_t act_t * (w_2^T r_t)``. ``w_gram``: the
    kept columns' ``w_2^T w_2`` when the caller has it (it is the same for every batch). The tokens'
    Gram matrix is computed in ``act``'s precision (float32 from the model: the costly product)."""
    a, w = act[:, kept], w_2[:, kept].to(act.dtype)
    gram = (w.T @ w).double() if w_gram is None else w_gram
    eq.ata += (a.T @ a).double() * gram
    eq.atr += (a.double() * (target @ w.double())).sum(0)
    eq.rtr += float(target.pow(2).sum())


@torch.no_grad()
def _fold(linear: nn.Linear, scales: torch.Tensor, kept: torch.Tensor, width: int) -> None:
    """Multiply the input columns of each kept group (``width`` columns each) by its scale."""
    w = _weight(linear)
    per_group = torch.ones(kept.numel(), dtype=w.dtype, device=w.device)
    per_group[kept] = scales.to(w.dtype).to(w.device)
    w.mul_(per_group.repeat_interleave(width).unsqueeze(0))


def _solve(eq: NormalEquations, damping: float) -> tuple[torch.Tensor, float, float]:
    ones = torch.ones(eq.size, dtype=torch.float64)
    before = eq.error(ones)
    s = eq.solve(damping)
    after = eq.error(s)
    if not torch.isfinite(s).all() or after > before:  # numerical trouble: leave the layer as it is
        return ones, before, before
    return s, before, after


def _student_pass(layer: nn.Module, watch: dict[str, nn.Module], stop_after: str, hidden: list[torch.Tensor],
                  inputs: list) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Run ``layer`` on each batch's ``hidden`` up to ``stop_after``, returning the watched modules'
    (input, output) per batch."""
    out = []
    for x, (_, args, kwargs) in zip(hidden, inputs):
        seen, handles = _capture(watch, stop_after)
        try:
            _run_layer(layer, x, args, kwargs)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        out.append(seen)
    return out


@torch.no_grad()
def rescale_layers(model: nn.Module, parts: list[LayerParts], batches: list[dict[str, torch.Tensor]],
                   dense: Callable[[], AbstractContextManager], damping: float) -> list[dict[str, float]]:
    """Rescale every layer's kept heads and neurons in order (see the module docstring); ``dense()``
    is a context in which the model computes unpruned (the teacher). Returns, per layer, the relative
    reconstruction errors ``||A s - r||^2 / ||r||^2`` of both sub-layers before and after."""
    inputs = layer_inputs(model, parts[0].layer, batches)
    teacher = [x for x, _, _ in inputs]
    student = [x.clone() for x in teacher]
    masks = [b["attention_mask"].bool() if "attention_mask" in b else torch.ones(x.shape[:2], dtype=torch.bool,
             device=x.device) for b, x in zip(batches, teacher)]
    report = []
    for p in parts:
        w_o, w_2 = _weight(p.attn_out).double(), _weight(p.ffn_out).double()
        # the unpruned model's pre-LayerNorm sums: attention x + O(ctx) + b_O, FFN h + W2 a + b_2
        att_targets, ffn_targets = [], []
        with dense():
            for i, (_, args, kwargs) in enumerate(inputs):
                seen, handles = _capture({"o": p.attn_out, "in": p.ffn_in, "out": p.ffn_out})
                try:
                    out = _run_layer(p.layer, teacher[i], args, kwargs)
                finally:
                    for h in handles:
                        h.remove()
                att_targets.append(_tokens(teacher[i] + seen["o"][1], masks[i]).float())
                ffn_targets.append(_tokens(seen["in"][0] + seen["out"][1], masks[i]).float())
                teacher[i] = out
        row: dict[str, float] = {}
        heads = NormalEquations(int(p.kept_heads.sum()))
        for i, seen in enumerate(_student_pass(p.layer, {"o": p.attn_out}, "o", student, inputs)):
            ctx = _tokens(seen["o"][0], masks[i])
            target = att_targets[i].double() - _tokens(student[i], masks[i]) - _bias(p.attn_out)
            head_equations(heads, ctx, w_o, target, p.heads, p.kept_heads)
        if heads.size:
            s, before, after = _solve(heads, damping)
            _fold(p.attn_out, s, p.kept_heads, w_o.shape[1] // p.heads)
            row.update(attention_error_before=before / max(heads.rtr, 1e-30),
                       attention_error_after=after / max(heads.rtr, 1e-30))
        neurons = NormalEquations(int(p.kept_neurons.sum()))
        watch = {"in": p.ffn_in, "out": p.ffn_out}
        kept_w = w_2[:, p.kept_neurons]
        w_gram = kept_w.T @ kept_w
        for i, seen in enumerate(_student_pass(p.layer, watch, "out", student, inputs)):
            act = _tokens(seen["out"][0], masks[i]).float()
            target = ffn_targets[i].double() - _tokens(seen["in"][0], masks[i]) - _bias(p.ffn_out)
            neuron_equations(neurons, act, w_2, target, p.kept_neurons, w_gram)
        if neurons.size:
            s, before, after = _solve(neurons, damping)
            _fold(p.ffn_out, s, p.kept_neurons, 1)
            row.update(ffn_error_before=before / max(neurons.rtr, 1e-30),
                       ffn_error_after=after / max(neurons.rtr, 1e-30))
        for i, (_, args, kwargs) in enumerate(inputs):
            student[i] = _run_layer(p.layer, student[i], args, kwargs)
        report.append(row)
    return report
