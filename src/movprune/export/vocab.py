"""Vocabulary pruning: keep the tokens a corpus produces, rewrite the tokenizer and the embedding rows.

A WordPiece tokenizer (BERT) splits a word by greedy longest match against its vocabulary. If the
kept vocabulary holds every piece the full one produced for a word, each longest match is still
found (a subset cannot offer a longer one), so the word splits the same way. A BPE tokenizer
(RoBERTa) applies, at each step, the lowest-ranked merge among the adjacent pairs. If the kept
merges include every merge the full tokenizer applied to a word, each of those is still the
lowest-ranked available one, so the word is built the same way. In a BPE vocabulary each token is
the result of one merge of two shorter tokens; keeping a token therefore keeps, recursively, the
merge that built it and both its parts (intermediate tokens the corpus may never produce on their
own). The base alphabet (for byte-level BPE, the 256 bytes) is always kept, so nothing becomes
unknown. Merges whose result is not kept are dropped.

Both arguments assume the corpus was tokenized in full: a word cut by truncation at
``max_seq_length`` may contribute only its first pieces. Every corpus text is therefore tokenized
again with the pruned tokenizer; texts that come out differently keep all their tokens, untruncated,
and the check is repeated: any remaining difference is an :class:`ExportError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from movprune.errors import ExportError

#: Tokenizer models (``tokenizer.json``'s ``model.type``) whose vocabulary can be pruned.
SUPPORTED_MODELS = ("WordPiece", "BPE")
#: Files a tokenizer may carry beside ``tokenizer.json`` that also list the vocabulary.
_VOCAB_FILES = ("vocab.txt", "vocab.json", "merges.txt")

#: ``encode(tokenizer, max_length)``: token ids of every corpus text (``max_length`` None: untruncated).
Encoder = Callable[[Any, int | None], list[list[int]]]


@dataclass
class Corpus:
    """The texts whose tokens are kept, as a function that tokenizes them (the task's own
    preprocessing for ``--vocab task``) at ``max_length`` tokens."""

    name: str
    encode: Encoder
    max_length: int


@dataclass
class VocabPlan:
    """Which old ids are kept, in new-id order, and the tokenizer that maps to the new ids."""

    kept_ids: list[int]  # old ids, ascending: new id i is old id kept_ids[i]
    tokenizer_json: dict[str, Any]
    original_size: int
    texts: int
    texts_kept_untruncated: int

    @property
    def id_map(self) -> dict[int, int]:
        """Old id -> new id."""
        return {old: new for new, old in enumerate(self.kept_ids)}


def file_corpus(path: str | Path, max_length: int) -> Corpus:
    """A user's corpus: one text per line of ``path`` (empty lines skipped)."""
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ExportError(f"--vocab {path}: cannot read the corpus ({e}); give a UTF-8 text file, one "
                          "text per line, or --vocab task") from None
    texts = [t for t in lines if t]
    if not texts:
        raise ExportError(f"--vocab {path}: the file holds no text; give one text per line")

    def encode(tokenizer, length: int | None) -> list[list[int]]:
        kwargs = {"truncation": True, "max_length": length} if length else {}
        return list(tokenizer(texts, **kwargs)["input_ids"])

    return Corpus(f"the corpus {path}", encode, max_length)


def tokenizer_state(tokenizer) -> dict[str, Any]:
    """The fast tokenizer's ``tokenizer.json`` content; :class:`ExportError` for a tokenizer whose
    vocabulary cannot be pruned."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"--vocab: the run's tokenizer ({type(tokenizer).__name__}) has no tokenizer.json "
                          "(not a fast tokenizer); vocabulary pruning needs one: export without --vocab")
    state = json.loads(backend.to_str())
    kind = state.get("model", {}).get("type")
    if kind not in SUPPORTED_MODELS:
        raise ExportError(f"--vocab: the run's tokenizer is a {kind} model ({type(tokenizer).__name__}); "
                          f"vocabulary pruning supports {' and '.join(SUPPORTED_MODELS)} tokenizers (BERT, "
                          "RoBERTa): export without --vocab")
    if kind == "BPE" and state["model"].get("dropout"):
        raise ExportError("--vocab: the run's BPE tokenizer uses dropout (random merges); export without --vocab")
    return state


def _merge_pairs(model: dict[str, Any]) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def _merge_result(model: dict[str, Any], a: str, b: str) -> str:
    prefix = model.get("continuing_subword_prefix") or ""
    return a + (b[len(prefix):] if prefix and b.startswith(prefix) else b)


def _closure(state: dict[str, Any], kept: set[int], corpus_tokens: set[str]) -> set[int]:
    """``kept`` plus what the tokenizer model needs to reproduce the kept tokens (see module doc)."""
    model = state["model"]
    vocab: dict[str, int] = model["vocab"]
    kept = set(kept)
    if model["type"] == "WordPiece":
        # Single characters of the corpus (and their continuation forms): an unseen word made of
        # seen characters then splits into pieces instead of becoming the unknown token.
        prefix = model.get("continuing_subword_prefix") or ""
        for token in corpus_tokens:
            for ch in token.removeprefix(prefix) if prefix else token:
                kept.update(vocab[t] for t in (ch, prefix + ch) if t in vocab)
        return kept
    built_by: dict[str, list[tuple[str, str]]] = {}
    for a, b in _merge_pairs(model):
        built_by.setdefault(_merge_result(model, a, b), []).append((a, b))
    kept.update(i for t, i in vocab.items() if t not in built_by)  # the base alphabet
    inverse = {i: t for t, i in vocab.items()}
    todo = [inverse[i] for i in kept if i in inverse]
    while todo:
        for a, b in built_by.get(todo.pop(), ()):
            for part in (a, b):
                if part in vocab and vocab[part] not in kept:
                    kept.add(vocab[part])
                    todo.append(part)
    return kept


def _remap_processor(proc: dict[str, Any] | None, id_map: dict[int, int]) -> None:
    if not proc:
        return
    kind = proc.get("type")
    if kind == "Sequence":
        for p in proc.get("processors", []):
            _remap_processor(p, id_map)
    elif kind == "TemplateProcessing":
        for special in proc.get("special_tokens", {}).values():
            special["ids"] = [id_map[i] for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            token, old = proc[key]
            proc[key] = [token, id_map[old]]


def rewrite_state(state: dict[str, Any], kept_ids: list[int]) -> dict[str, Any]:
    """``tokenizer.json`` content with only ``kept_ids`` (ascending old ids), renumbered 0..n-1."""
    new = json.loads(json.dumps(state))
    id_map = {old: i for i, old in enumerate(kept_ids)}
    model = new["model"]
    inverse = {i: t for t, i in model["vocab"].items()}
    model["vocab"] = {inverse[old]: i for i, old in enumerate(kept_ids) if old in inverse}
    if model["type"] == "BPE":
        kept_tokens = set(model["vocab"])
        pairs = _merge_pairs(model)
        merges = [m for m, (a, b) in zip(model["merges"], pairs)
                  if _merge_result(model, a, b) in kept_tokens and a in kept_tokens and b in kept_tokens]
        model["merges"] = merges
    for token in new.get("added_tokens", []):
        token["id"] = id_map[token["id"]]
    _remap_processor(new.get("post_processor"), id_map)
    if new.get("padding"):
        new["padding"]["pad_id"] = id_map[new["padding"]["pad_id"]]
    return new


def _write_tokenizer(tokenizer, state: dict[str, Any], folder: Path, id_map: dict[int, int]) -> None:
    tokenizer.save_pretrained(folder)
    for name in _VOCAB_FILES:
        (folder / name).unlink(missing_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    config_file = folder / "tokenizer_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        decoder = config.get("added_tokens_decoder")
        if isinstance(decoder, dict):
            config["added_tokens_decoder"] = {str(id_map[int(k)]): v for k, v in decoder.items()}
            config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _pruned_tokenizer(tokenizer, state: dict[str, Any], kept: list[int]):
    """The tokenizer a user loads from a folder holding ``state`` (written and read back)."""
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        _write_tokenizer(tokenizer, state, Path(tmp), {old: i for i, old in enumerate(kept)})
        return AutoTokenizer.from_pretrained(tmp, trust_remote_code=False)


def plan_vocab(tokenizer, corpus: Corpus) -> VocabPlan:
    """Keep the tokens ``corpus`` produces at its ``max_length`` (plus special tokens and what the
    tokenizer model needs to produce them again), checked by tokenizing the corpus again."""
    state = tokenizer_state(tokenizer)
    size = len(tokenizer)
    special = {t["id"] for t in state.get("added_tokens", [])} | set(tokenizer.all_special_ids)
    pad = tokenizer.pad_token_id
    # Ids up to the padding id keep their numbers: RoBERTa counts positions from it.
    floor = set(range(pad + 1)) if pad is not None else set()
    original = corpus.encode(tokenizer, corpus.max_length)

    def build(ids: set[int]) -> tuple[list[int], dict[str, Any]]:
        tokens = set(tokenizer.convert_ids_to_tokens(sorted(ids)))
        kept = sorted(_closure(state, ids | special | floor, tokens))
        return kept, rewrite_state(state, kept)

    ids = {i for row in original for i in row}
    kept, new_state = build(ids)
    wrong = _mismatches(tokenizer, new_state, kept, corpus, original)
    if wrong:
        full = corpus.encode(tokenizer, None)
        ids |= {i for n in wrong for i in full[n]}
        kept, new_state = build(ids)
        still = _mismatches(tokenizer, new_state, kept, corpus, original)
        if still:
            raise ExportError(f"--vocab {corpus.name}: the pruned tokenizer splits {len(still)} corpus texts "
                              f"differently from the original (first: text {still[0]}); nothing was written. "
                              "Please report this")
    return VocabPlan(kept, new_state, size, len(original), len(wrong))


def _mismatches(tokenizer, state: dict[str, Any], kept: list[int], corpus: Corpus,
                original: list[list[int]]) -> list[int]:
    pruned = corpus.encode(_pruned_tokenizer(tokenizer, state, kept), corpus.max_length)
    return [n for n, (a, b) in enumerate(zip(original, pruned))
            if len(a) != len(b) or any(kept[j] != i for i, j in zip(a, b))]


def save_tokenizer(tokenizer, plan: VocabPlan, folder: Path) -> None:
    """Save ``tokenizer`` into ``folder`` with the pruned vocabulary (``tokenizer.json`` rewritten;
    vocabulary files it would also write are dropped, so ``tokenizer.json`` is the only source)."""
    _write_tokenizer(tokenizer, plan.tokenizer_json, Path(folder), plan.id_map)


@torch.no_grad()
def prune_embeddings(model: nn.Module, plan: VocabPlan) -> None:
    """Keep only the rows of ``plan.kept_ids`` in the word embeddings (and an LM head's rows and
    bias, tied or not); the config's vocabulary size and special-token ids follow."""
    keep = torch.tensor(plan.kept_ids, dtype=torch.long)
    id_map = plan.id_map
    old = model.get_input_embeddings()
    pad = model.config.pad_token_id
    new = nn.Embedding(len(keep), old.embedding_dim, padding_idx=None if pad is None else id_map[pad],
                       dtype=old.weight.dtype)
    new.weight.copy_(old.weight[keep])
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = head is not None and head.weight is old.weight
    model.set_input_embeddings(new)
    if head is not None:
        head.weight = new.weight if tied else nn.Parameter(head.weight[keep].clone())
        head.out_features = len(keep)
        if head.bias is not None:
            head.bias = nn.Parameter(head.bias[keep].clone())
        for module in model.modules():  # BERT's and RoBERTa's LM heads hold the bias twice
            if module is not head and isinstance(getattr(module, "bias", None), nn.Parameter) \
                    and module.bias.shape == (plan.original_size,) and hasattr(module, "decoder"):
                module.bias = head.bias
    config = model.config
    config.vocab_size = len(keep)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            if value not in id_map:
                setattr(config, key, None)
            else:
                setattr(config, key, id_map[value])


def remap_batch(batch: dict[str, torch.Tensor], plan: VocabPlan) -> dict[str, torch.Tensor]:
    """``batch`` with its (kept) old token ids replaced by the new ones."""
    lookup = torch.full((plan.original_size,), -1, dtype=torch.long)
    lookup[torch.tensor(plan.kept_ids)] = torch.arange(len(plan.kept_ids))
    ids = lookup[batch["input_ids"]]
    if (ids < 0).any():
        raise ValueError("the batch holds token ids outside the kept vocabulary")
    return {**batch, "input_ids": ids}


def kept_ids_batch(batch: dict[str, torch.Tensor], plan: VocabPlan) -> dict[str, torch.Tensor]:
    """``batch`` with every token id replaced by a kept one (deterministically), for checks."""
    kept = torch.tensor(plan.kept_ids)
    return {**batch, "input_ids": kept[batch["input_ids"] % len(kept)]}


def summary(plan: VocabPlan, corpus: Corpus) -> dict[str, Any]:
    """What the export info records about the pruning."""
    return {"corpus": corpus.name, "max_length": corpus.max_length, "texts": plan.texts,
            "texts_kept_untruncated": plan.texts_kept_untruncated, "original_size": plan.original_size,
            "kept": len(plan.kept_ids), "tokenizer": plan.tokenizer_json["model"]["type"]}
