"""BERT and RoBERTa with a different number of attention heads and FFN neurons in each layer.

``movprune export --format compact`` copies this file into the exported folder and names it in the
config's ``auto_map``, so the folder loads with transformers' Auto classes and
``trust_remote_code=True`` (transformers 5 no longer prunes heads itself). It depends only on torch
and transformers: whoever loads the folder does not need movprune.

Heads keep their original size; a layer with no heads left skips attention (its output is the
attention-output bias), a layer with no neurons left outputs the FFN-output bias.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from transformers.models.bert.configuration_bert import BertConfig
from transformers.models.bert.modeling_bert import (
    BertEncoder,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertLayer,
    BertModel,
    BertSelfAttention,
)
from transformers.models.roberta.configuration_roberta import RobertaConfig
from transformers.models.roberta.modeling_roberta import (
    RobertaForMaskedLM,
    RobertaForMultipleChoice,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
)


class CompactBertConfig(BertConfig):
    """A BERT config with per-layer head counts and FFN sizes.

    ``num_attention_heads`` and ``intermediate_size`` keep the original (largest) values; the
    per-layer lists say how many heads / neurons each layer actually has, and
    ``attention_head_size`` fixes the head size (no longer ``hidden_size / heads`` of a layer).
    """

    model_type = "compact_bert"

    num_attention_heads_per_layer: list[int] | None = None
    intermediate_size_per_layer: list[int] | None = None
    attention_head_size: int | None = None

    def __post_init__(self, **kwargs):
        _per_layer_defaults(self)
        super().__post_init__(**kwargs)


def _per_layer_defaults(config) -> None:
    if config.attention_head_size is None:
        config.attention_head_size = config.hidden_size // config.num_attention_heads
    if config.num_attention_heads_per_layer is None:
        config.num_attention_heads_per_layer = [config.num_attention_heads] * config.num_hidden_layers
    if config.intermediate_size_per_layer is None:
        config.intermediate_size_per_layer = [config.intermediate_size] * config.num_hidden_layers
    for name in ("num_attention_heads_per_layer", "intermediate_size_per_layer"):
        if len(getattr(config, name)) != config.num_hidden_layers:
            raise ValueError(f"{name} must have num_hidden_layers ({config.num_hidden_layers}) entries")


class CompactRobertaConfig(RobertaConfig):
    """A RoBERTa config with per-layer head counts and FFN sizes (as :class:`CompactBertConfig`)."""

    model_type = "compact_roberta"

    num_attention_heads_per_layer: list[int] | None = None
    intermediate_size_per_layer: list[int] | None = None
    attention_head_size: int | None = None

    def __post_init__(self, **kwargs):
        _per_layer_defaults(self)
        super().__post_init__(**kwargs)


class CompactBertSelfAttention(BertSelfAttention):
    """BERT self-attention with ``num_heads`` heads of ``config.attention_head_size``."""

    def __init__(self, config: CompactBertConfig, num_heads: int, is_causal: bool = False,
                 layer_idx: int | None = None):
        super().__init__(config, is_causal=is_causal, layer_idx=layer_idx)
        self.num_attention_heads = num_heads
        self.attention_head_size = config.attention_head_size
        self.all_head_size = num_heads * config.attention_head_size
        self.scaling = self.attention_head_size**-0.5
        self.query = nn.Linear(config.hidden_size, self.all_head_size)
        self.key = nn.Linear(config.hidden_size, self.all_head_size)
        self.value = nn.Linear(config.hidden_size, self.all_head_size)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        if self.num_attention_heads == 0:
            # No head left: an empty context; the output projection then yields its bias alone.
            return hidden_states.new_zeros(*hidden_states.shape[:-1], 0), None
        return super().forward(hidden_states, attention_mask, **kwargs)


class CompactBertLayer(BertLayer):
    """A BERT layer whose attention and FFN widths come from the per-layer lists."""

    # RoBERTa's layers are BERT's (same modules, same forward), so this class serves both.
    def __init__(self, config: CompactBertConfig, layer_idx: int):
        if config.add_cross_attention:
            raise ValueError("compact BERT supports encoders only (add_cross_attention=False)")
        layer_config = config.__class__.from_dict(
            {**config.to_dict(), "intermediate_size": config.intermediate_size_per_layer[layer_idx]})
        heads = config.num_attention_heads_per_layer[layer_idx]
        with warnings.catch_warnings():
            # A layer may have lost every head or neuron: its Linear layers then have no weights.
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            super().__init__(layer_config, layer_idx=layer_idx)
            self.attention.self = CompactBertSelfAttention(config, heads, is_causal=config.is_decoder,
                                                           layer_idx=layer_idx)
            self.attention.output.dense = nn.Linear(heads * config.attention_head_size, config.hidden_size)


class CompactBertEncoder(BertEncoder):
    """A stack of :class:`CompactBertLayer`."""

    def __init__(self, config: CompactBertConfig):
        nn.Module.__init__(self)
        self.config = config
        self.layer = nn.ModuleList([CompactBertLayer(config, i) for i in range(config.num_hidden_layers)])


class CompactBertModel(BertModel):
    """:class:`BertModel` with a :class:`CompactBertEncoder`."""

    config_class = CompactBertConfig

    def __init__(self, config: CompactBertConfig, add_pooling_layer: bool = True):
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        self.encoder = CompactBertEncoder(config)
        self.post_init()


class CompactRobertaModel(RobertaModel):
    """:class:`RobertaModel` with a :class:`CompactBertEncoder`."""

    config_class = CompactRobertaConfig

    def __init__(self, config: CompactRobertaConfig, add_pooling_layer: bool = True):
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        self.encoder = CompactBertEncoder(config)
        self.post_init()


def _with_compact_encoder(model: nn.Module, config: CompactBertConfig) -> None:
    if hasattr(model, "roberta"):
        model.roberta = CompactRobertaModel(config, add_pooling_layer=model.roberta.pooler is not None)
    else:
        model.bert = CompactBertModel(config, add_pooling_layer=model.bert.pooler is not None)
    model.post_init()


def _compact_head(base: type, name: str, config_class: type) -> type:
    """``base`` (a BERT or RoBERTa task model) on the compact encoder of ``config_class``."""

    def __init__(self, config):
        base.__init__(self, config)
        _with_compact_encoder(self, config)

    encoder = "CompactRobertaModel" if config_class is CompactRobertaConfig else "CompactBertModel"
    return type(name, (base,), {"config_class": config_class, "__init__": __init__,
                                "__doc__": f"{base.__name__} on :class:`{encoder}`.", "__module__": __name__})


CompactBertForSequenceClassification = _compact_head(BertForSequenceClassification,
                                                     "CompactBertForSequenceClassification", CompactBertConfig)
CompactBertForQuestionAnswering = _compact_head(BertForQuestionAnswering, "CompactBertForQuestionAnswering",
                                                CompactBertConfig)
CompactBertForTokenClassification = _compact_head(BertForTokenClassification, "CompactBertForTokenClassification",
                                                  CompactBertConfig)
CompactBertForMultipleChoice = _compact_head(BertForMultipleChoice, "CompactBertForMultipleChoice", CompactBertConfig)
CompactBertForMaskedLM = _compact_head(BertForMaskedLM, "CompactBertForMaskedLM", CompactBertConfig)
CompactRobertaForSequenceClassification = _compact_head(RobertaForSequenceClassification,
                                                        "CompactRobertaForSequenceClassification",
                                                        CompactRobertaConfig)
CompactRobertaForQuestionAnswering = _compact_head(RobertaForQuestionAnswering, "CompactRobertaForQuestionAnswering",
                                                   CompactRobertaConfig)
CompactRobertaForTokenClassification = _compact_head(RobertaForTokenClassification,
                                                     "CompactRobertaForTokenClassification", CompactRobertaConfig)
CompactRobertaForMultipleChoice = _compact_head(RobertaForMultipleChoice, "CompactRobertaForMultipleChoice",
                                                CompactRobertaConfig)
CompactRobertaForMaskedLM = _compact_head(RobertaForMaskedLM, "CompactRobertaForMaskedLM", CompactRobertaConfig)

#: model_type -> its compact config class.
COMPACT_CONFIGS = {"bert": CompactBertConfig, "roberta": CompactRobertaConfig}

#: BERT / RoBERTa class name -> (compact class name, Auto class it registers under).
COMPACT_CLASSES = {
    "BertModel": ("CompactBertModel", "AutoModel"),
    "BertForSequenceClassification": ("CompactBertForSequenceClassification", "AutoModelForSequenceClassification"),
    "BertForQuestionAnswering": ("CompactBertForQuestionAnswering", "AutoModelForQuestionAnswering"),
    "BertForTokenClassification": ("CompactBertForTokenClassification", "AutoModelForTokenClassification"),
    "BertForMultipleChoice": ("CompactBertForMultipleChoice", "AutoModelForMultipleChoice"),
    "BertForMaskedLM": ("CompactBertForMaskedLM", "AutoModelForMaskedLM"),
    "RobertaModel": ("CompactRobertaModel", "AutoModel"),
    "RobertaForSequenceClassification": ("CompactRobertaForSequenceClassification",
                                         "AutoModelForSequenceClassification"),
    "RobertaForQuestionAnswering": ("CompactRobertaForQuestionAnswering", "AutoModelForQuestionAnswering"),
    "RobertaForTokenClassification": ("CompactRobertaForTokenClassification", "AutoModelForTokenClassification"),
    "RobertaForMultipleChoice": ("CompactRobertaForMultipleChoice", "AutoModelForMultipleChoice"),
    "RobertaForMaskedLM": ("CompactRobertaForMaskedLM", "AutoModelForMaskedLM"),
}
