"""Pruning patterns: which weights one score (or importance) decides together.

A :class:`Grouping` is a set of groups of equal size spread over one or more matrices; every
method keeps or drops whole groups. Its scores have one entry per group, and each member matrix
gets its mask by *expansion*: the group's value repeated over the group's block of that matrix.
Gradients flow back through the expansion, so a group's score receives the sum of its weights'
straight-through gradients (movement) or gate gradients (L0), as in Block Pruning (Lagunas et al.
2021).

* ``unstructured``: one grouping per matrix with 1x1 blocks; the expansion is the identity, so
  this is the paper's per-weight pruning, unchanged.
* ``block``: one grouping per matrix with ``block_shape`` blocks.
* ``hybrid``: per transformer layer, one grouping of the attention heads (a head is its rows of
  Q, K and V and its columns of the attention output: one score for all four) and one of the FFN
  neurons (a row of FFN-in with the matching column of FFN-out).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from movprune.errors import RecipeError

PATTERNS = ("unstructured", "block", "hybrid")

# Module-name endings of each matrix role (BERT/RoBERTa/ELECTRA first, then DistilBERT); the
# attention output is tried before the FFN output, whose ending it shares.
_ROLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Q", ("attention.self.query", "attention.q_lin")),
    ("K", ("attention.self.key", "attention.k_lin")),
    ("V", ("attention.self.value", "attention.v_lin")),
    ("O", ("attention.output.dense", "attention.out_lin")),
    ("FFN in", ("intermediate.dense", "ffn.lin1")),
    ("FFN out", ("output.dense", "ffn.lin2")),
)


def matrix_role(name: str) -> tuple[str, str] | None:
    """(role, layer prefix) of an encoder Linear from its module name, e.g.
    ``bert.encoder.layer.0.attention.self.query`` -> ``("Q", "bert.encoder.layer.0.")``."""
    for role, endings in _ROLES:
        for end in endings:
            if name == end or name.endswith("." + end):
                return role, name[: len(name) - len(end)]
    return None


def num_attention_heads(config) -> int:
    """Attention heads per layer of a transformers config."""
    for key in ("num_attention_heads", "n_heads"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise RecipeError("recipe", ["pruner.pattern: hybrid needs the model config's number of attention heads"])


@dataclass(frozen=True)
class Member:
    """One matrix of a grouping: its name, shape (out, in) and the block one group covers in it."""

    name: str
    shape: tuple[int, int]
    block: tuple[int, int]

    @property
    def grid(self) -> tuple[int, int]:
        """Groups along the rows and the columns of the matrix."""
        return self.shape[0] // self.block[0], self.shape[1] // self.block[1]


@dataclass(frozen=True)
class Grouping:
    """Equal-size groups over one or more matrices; group ``g`` is entry ``g`` of each member's grid
    (row-major)."""

    name: str
    members: tuple[Member, ...]

    @property
    def num_groups(self) -> int:
        """Number of groups (scores)."""
        rows, cols = self.members[0].grid
        return rows * cols

    @property
    def score_shape(self) -> tuple[int, ...]:
        """Shape of the scores: the first member's grid (the weight's shape when unstructured)."""
        return self.members[0].grid

    @property
    def group_numel(self) -> int:
        """Weights one group holds (over all members)."""
        return sum(m.block[0] * m.block[1] for m in self.members)

    @property
    def identity(self) -> bool:
        """One matrix, one weight per group: the mask is the scores' own shape (unstructured)."""
        return len(self.members) == 1 and self.members[0].block == (1, 1)

    def expand(self, values: torch.Tensor, index: int) -> torch.Tensor:
        """The mask of member ``index`` from per-group ``values`` (any shape with ``num_groups``
        entries): each value repeated over its block."""
        m = self.members[index]
        (rows, cols), (rb, cb) = m.grid, m.block
        if (rb, cb) == (1, 1):
            return values.reshape(m.shape)
        return values.reshape(rows, 1, cols, 1).expand(rows, rb, cols, cb).reshape(m.shape)

    def block_rms(self, weights: list[torch.Tensor]) -> torch.Tensor:
        """Root mean square of each group's weights over all members (``|W|`` for 1x1 blocks), in
        :attr:`score_shape`: magnitude pruning's block importance, comparable across block sizes."""
        if self.identity:
            return weights[0].detach().abs()
        total = None
        for m, w in zip(self.members, weights):
            (rows, cols), (rb, cb) = m.grid, m.block
            sq = w.detach().float().reshape(rows, rb, cols, cb).pow(2).sum(dim=(1, 3)).reshape(-1)
            total = sq if total is None else total + sq
        return (total / self.group_numel).sqrt().reshape(self.score_shape)


def _blocks(name: str, shape: tuple[int, int], block: tuple[int, int]) -> Member:
    if shape[0] % block[0] or shape[1] % block[1]:
        raise RecipeError("recipe", [
            f"pruner.block_shape: {list(block)} does not tile {name} ({shape[0]}x{shape[1]}); choose rows "
            f"dividing {shape[0]} and cols dividing {shape[1]} (every pruned matrix must be tiled exactly)"])
    return Member(name, shape, block)


def build_groupings(pattern: str, linears: dict[str, nn.Linear], model_config=None,
                    block_shape: tuple[int, int] | None = None) -> list[Grouping]:
    """The groupings of ``pattern`` over the encoder Linears ``linears`` (name -> layer).

    Raises :class:`RecipeError` when the pattern does not fit the model (a block shape that does
    not tile a matrix; a layer without the six matrices hybrid pruning expects).
    """
    shapes = {name: tuple(layer.weight.shape) for name, layer in linears.items()}
    if pattern == "unstructured":
        return [Grouping(name, (Member(name, shape, (1, 1)),)) for name, shape in shapes.items()]
    if pattern == "block":
        if block_shape is None:
            raise RecipeError("recipe", ["pruner.block_shape: pattern 'block' needs [rows, cols]"])
        return [Grouping(name, (_blocks(name, shape, tuple(block_shape)),)) for name, shape in shapes.items()]
    if pattern != "hybrid":
        raise RecipeError("recipe", [f"pruner.pattern: unknown pattern '{pattern}' (choose {', '.join(PATTERNS)})"])
    heads = num_attention_heads(model_config)
    layers: dict[str, dict[str, str]] = {}
    for name in shapes:
        found = matrix_role(name)
        if found is None:
            raise RecipeError("recipe", [f"pruner.pattern: hybrid does not know the role of {name} (it knows "
                                         "BERT-style and DistilBERT attention/FFN matrices); use block"])
        role, prefix = found
        layers.setdefault(prefix, {})[role] = name
    groupings = []
    for prefix, roles in layers.items():
        missing = [r for r, _ in _ROLES if r not in roles]
        if missing:
            raise RecipeError("recipe", [f"pruner.pattern: hybrid needs Q, K, V, attention output, FFN in and "
                                         f"FFN out in every layer; {prefix or 'a layer'} lacks {', '.join(missing)}"])
        all_heads = shapes[roles["Q"]][0]
        if all_heads % heads:
            raise RecipeError("recipe", [f"pruner.pattern: {roles['Q']} has {all_heads} rows, not a multiple of "
                                         f"{heads} heads"])
        size = all_heads // heads
        attention = [Member(roles[r], shapes[roles[r]], (size, shapes[roles[r]][1])) for r in ("Q", "K", "V")]
        attention.append(Member(roles["O"], shapes[roles["O"]], (shapes[roles["O"]][0], size)))
        ffn_in, ffn_out = shapes[roles["FFN in"]], shapes[roles["FFN out"]]
        groupings.append(Grouping(prefix + "attention", tuple(attention)))
        groupings.append(Grouping(prefix + "ffn", (Member(roles["FFN in"], ffn_in, (1, ffn_in[1])),
                                                   Member(roles["FFN out"], ffn_out, (ffn_out[0], 1)))))
    return groupings


def weighted_keep_count(sorted_sizes: torch.Tensor, kept_weights: int) -> int:
    """How many groups, taken in order, hold a number of weights nearest ``kept_weights`` (at least
    one): the exact kept count when every group holds one weight."""
    cumulative = torch.cumsum(sorted_sizes.to(torch.float64), 0)
    n = int(torch.searchsorted(cumulative, torch.tensor(float(kept_weights), dtype=torch.float64)))
    # cumulative[n-1] < kept <= cumulative[n]: take n or n+1 groups, whichever is nearer
    if n < len(cumulative):
        below = float(cumulative[n - 1]) if n > 0 else 0.0
        if float(cumulative[n]) - kept_weights <= kept_weights - below:
            n += 1
    return max(1, min(n, len(cumulative)))


def ranked_groups(values: list[torch.Tensor], sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All groups of several groupings by decreasing value (ties by position): (sorted values,
    their sizes in weights, their positions in the concatenation)."""
    flat = torch.cat([v.detach().reshape(-1).float() for v in values])
    per = torch.cat([torch.full((v.numel(),), float(s), dtype=torch.float64) for v, s in zip(values, sizes)])
    order = torch.sort(flat, descending=True, stable=True).indices
    return flat[order], per[order.cpu()], order


def weighted_topk_masks(values: dict[str, torch.Tensor], sizes: dict[str, int], kept_weights: int
                        ) -> dict[str, torch.Tensor]:
    """0/1 masks over several groupings keeping the highest-valued groups whose weights add up
    nearest ``kept_weights`` (groupings may differ in group size)."""
    names = list(values)
    _, per, order = ranked_groups([values[n] for n in names], [sizes[n] for n in names])
    n = weighted_keep_count(per, kept_weights)
    keep = torch.zeros(order.numel(), dtype=torch.bool, device=order.device)
    keep[order[:n]] = True
    out, start = {}, 0
    for name in names:
        v = values[name]
        out[name] = keep[start:start + v.numel()].reshape(v.shape).to(v.dtype)
        start += v.numel()
    return out


def weighted_cut(values: list[torch.Tensor], sizes: list[int], kept_weights: int) -> tuple[float, float]:
    """(the value of the last group kept, that of the first group dropped) when keeping the
    highest-valued groups that hold about ``kept_weights`` weights (-inf for the second when all
    are kept)."""
    ranked, per, _ = ranked_groups(values, sizes)
    n = weighted_keep_count(per, kept_weights)
    lower = float(ranked[n]) if n < ranked.numel() else float("-inf")
    return float(ranked[n - 1]), lower


def heads_and_neurons(weights: dict[str, torch.Tensor], heads: int) -> dict[str, dict[str, int]]:
    """Attention heads and FFN neurons still computing something, per layer prefix, from the encoder
    Linear weights (module name -> weight). A head is left while its value rows and its
    attention-output columns both hold a non-zero weight, a neuron while its FFN-in row and FFN-out
    column both do: otherwise its output is zero or a constant, and a compact export removes it."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for name, w in weights.items():
        found = matrix_role(name)
        if found is not None:
            layers.setdefault(found[1], {})[found[0]] = w
    out = {}
    for prefix, roles in layers.items():
        entry: dict[str, int] = {}
        if "V" in roles and "O" in roles:
            v, o = roles["V"], roles["O"]
            size = v.shape[0] // heads
            v_alive = v.reshape(heads, size, -1).ne(0).flatten(1).any(1)
            o_alive = o.reshape(o.shape[0], heads, size).ne(0).transpose(0, 1).flatten(1).any(1)
            entry.update(heads_left=int((v_alive & o_alive).sum()), heads=heads)
        if "FFN in" in roles and "FFN out" in roles:
            alive = roles["FFN in"].ne(0).any(1) & roles["FFN out"].ne(0).any(0)
            entry.update(neurons_left=int(alive.sum()), neurons=int(alive.numel()))
        out[prefix] = entry
    return out
