"""Compact export: physically remove the attention heads and FFN neurons that pruning emptied.

Removal is exact, never an approximation:

* FFN neuron ``i`` computes ``act(W_in[i] · x + b_in[i])`` and adds it times ``W_out[:, i]``.
  If ``W_out[:, i]`` is all zero it contributes nothing. If ``W_in[i]`` is all zero its activation
  is the constant ``act(b_in[i])``, so its contribution ``act(b_in[i]) · W_out[:, i]`` is folded into
  the output bias.
* Attention head ``h`` adds ``softmax(·) V_h  O_h^T``. If its output columns ``O_h`` are all zero it
  contributes nothing. If its value rows ``W_v[h]`` are all zero every value vector is the bias
  ``b_v[h]``, and since attention probabilities sum to 1 its output is ``O_h b_v[h]`` for every token:
  folded into the output bias.
* A head whose query or key weights are all zero still attends (uniformly, or by its biases) to
  token-dependent values, so it is kept.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from movprune.errors import ExportError
from movprune.export import compact_bert

#: Name of the modeling file inside a compact export (``auto_map`` points at it).
MODELING_FILE = "compact_bert.py"


@dataclass
class LayerPlan:
    """What one encoder layer keeps, and the bias corrections that keep its output exact."""

    heads_kept: list[int]
    neurons_kept: list[int]
    attention_bias_shift: torch.Tensor  # added to the attention-output bias
    ffn_bias_shift: torch.Tensor  # added to the FFN-output bias


def _bert_layers(model: nn.Module) -> list[nn.Module]:
    if getattr(model.config, "model_type", None) not in compact_bert.COMPACT_CONFIGS:
        raise ExportError(f"compact export supports BERT and RoBERTa models (model_type "
                          f"{' or '.join(map(repr, compact_bert.COMPACT_CONFIGS))}); this run's model is "
                          f"'{getattr(model.config, 'model_type', '?')}'. Use --format sparse instead")
    if model.config.add_cross_attention or model.config.is_decoder:
        raise ExportError("compact export supports encoders only (no decoder, no cross-attention)")
    return list(model.base_model.encoder.layer)


@torch.no_grad()
def plan_layer(layer: nn.Module) -> LayerPlan:
    """Which heads and neurons of a BERT layer can be removed exactly, and the bias shifts."""
    att = layer.attention.self
    size = att.attention_head_size
    v_w, v_b = att.value.weight.double(), att.value.bias.double()
    o_w = layer.attention.output.dense.weight.double()
    att_shift = torch.zeros(o_w.shape[0], dtype=torch.float64)
    heads_kept = []
    for h in range(att.num_attention_heads):
        cols = slice(h * size, (h + 1) * size)
        if not o_w[:, cols].any():
            continue
        if not v_w[cols].any():
            att_shift += o_w[:, cols] @ v_b[cols]
            continue
        heads_kept.append(h)

    in_w, in_b = layer.intermediate.dense.weight, layer.intermediate.dense.bias
    out_w = layer.output.dense.weight.double()
    dead_out = ~out_w.any(dim=0)
    dead_in = ~in_w.any(dim=1)
    constant = dead_in & ~dead_out
    # The activation the layer itself applies, on the constant pre-activations (fp32, as in the model).
    act = layer.intermediate.intermediate_act_fn(in_b[constant]).double()
    ffn_shift = out_w[:, constant] @ act
    neurons_kept = torch.nonzero(~(dead_in | dead_out)).flatten().tolist()
    return LayerPlan(heads_kept, neurons_kept, att_shift, ffn_shift)


def compact_state_dict(model: nn.Module, plans: list[LayerPlan]) -> dict[str, torch.Tensor]:
    """The dense model's state dict with emptied heads and neurons sliced out and biases folded."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    base = "" if model.base_model is model else f"{model.base_model_prefix}."
    size = model.config.hidden_size // model.config.num_attention_heads
    for i, plan in enumerate(plans):
        p = f"{base}encoder.layer.{i}."
        idx = torch.tensor([h * size + d for h in plan.heads_kept for d in range(size)], dtype=torch.long)
        for proj in ("query", "key", "value"):
            state[p + f"attention.self.{proj}.weight"] = state[p + f"attention.self.{proj}.weight"][idx]
            state[p + f"attention.self.{proj}.bias"] = state[p + f"attention.self.{proj}.bias"][idx]
        o_w, o_b = p + "attention.output.dense.weight", p + "attention.output.dense.bias"
        state[o_w] = state[o_w][:, idx].contiguous()
        state[o_b] = (state[o_b].double() + plan.attention_bias_shift).to(state[o_b].dtype)

        keep = torch.tensor(plan.neurons_kept, dtype=torch.long)
        in_w, in_b = p + "intermediate.dense.weight", p + "intermediate.dense.bias"
        out_w, out_b = p + "output.dense.weight", p + "output.dense.bias"
        state[in_w], state[in_b] = state[in_w][keep], state[in_b][keep]
        state[out_w] = state[out_w][:, keep].contiguous()
        state[out_b] = (state[out_b].double() + plan.ffn_bias_shift).to(state[out_b].dtype)
    return state


def compact_model(model: nn.Module) -> tuple[nn.Module, list[LayerPlan]]:
    """A :mod:`compact_bert` model computing what ``model`` computes, without its emptied parts."""
    layers = _bert_layers(model)
    arch = type(model).__name__
    if arch not in compact_bert.COMPACT_CLASSES:
        raise ExportError(f"compact export does not support {arch}; supported: "
                          f"{', '.join(compact_bert.COMPACT_CLASSES)}")
    plans = [plan_layer(layer) for layer in layers]
    config = model.config
    size = config.hidden_size // config.num_attention_heads
    compact_name, auto_name = compact_bert.COMPACT_CLASSES[arch]
    base_arch = "RobertaModel" if config.model_type == "roberta" else "BertModel"
    module = MODELING_FILE.removesuffix(".py")
    values = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "architectures", "auto_map")}
    compact_config = compact_bert.COMPACT_CONFIGS[config.model_type].from_dict({
        **values,
        "architectures": [compact_name],
        "auto_map": {"AutoConfig": f"{module}.{compact_bert.COMPACT_CONFIGS[config.model_type].__name__}",
                     "AutoModel": f"{module}.{compact_bert.COMPACT_CLASSES[base_arch][0]}",
                     auto_name: f"{module}.{compact_name}"},
        "attention_head_size": size,
        "num_attention_heads_per_layer": [len(p.heads_kept) for p in plans],
        "intermediate_size_per_layer": [len(p.neurons_kept) for p in plans],
    })
    compact = getattr(compact_bert, compact_name)(compact_config)
    compact.load_state_dict(compact_state_dict(model, plans), strict=True)
    compact.eval()
    return compact, plans


def save_compact(compact: nn.Module, folder: Path) -> None:
    """``save_pretrained`` the compact model and ship the modeling file beside it."""
    compact.save_pretrained(folder, safe_serialization=True)
    shutil.copyfile(compact_bert.__file__, Path(folder) / MODELING_FILE)
