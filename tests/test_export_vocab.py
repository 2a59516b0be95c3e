"""Vocabulary pruning on export: the pruned tokenizer splits every training sentence into the same
token strings (new ids), the pruned model gives the original's logits on them, a word outside the
kept vocabulary maps as docs/export.md says, and the folder loads with plain transformers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from movprune.errors import ExportError
from movprune.export import export_run
from movprune.export.vocab import tokenizer_state

from conftest import TINY_GLUE_DIR, run_cli, tiny_recipe_dict

FP32_TOL = 1e-4
MAX_LEN = 32  # the tiny recipe's max_seq_length


def _train_sentences() -> list[str]:
    with open(TINY_GLUE_DIR / "SST-2" / "train.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [r[0] for r in rows]


def _logits(folder: Path, texts: list[str]) -> tuple[torch.Tensor, list[list[str]]]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
    tokens = [tokenizer.convert_ids_to_tokens(row[row != tokenizer.pad_token_id]) for row in batch["input_ids"]]
    with torch.inference_mode():
        return model(**batch).logits, tokens


def _same_tokens_and_logits(original: Path, pruned: Path) -> None:
    texts = _train_sentences()
    ref_logits, ref_tokens = _logits(original, texts)
    got_logits, got_tokens = _logits(pruned, texts)
    assert got_tokens == ref_tokens
    assert ref_logits.std() > 0
    assert (got_logits - ref_logits).abs().max() <= FP32_TOL


@pytest.fixture(scope="module")
def bert_export(finished_run, tmp_path_factory) -> Path:
    to = tmp_path_factory.mktemp("vocab") / "dense"
    export_run(finished_run, to, "dense", vocab="task")
    return to


def test_bert_vocab_export_tokenizes_the_training_data_identically_with_the_same_logits(finished_run, bert_export):
    from transformers import AutoTokenizer, pipeline

    _same_tokens_and_logits(finished_run / "model", bert_export)
    original = AutoTokenizer.from_pretrained(finished_run / "model")
    pruned = AutoTokenizer.from_pretrained(bert_export)
    config = json.loads((bert_export / "config.json").read_text())
    assert config["vocab_size"] == len(pruned) < len(original) / 10
    # What is kept: every token the training data produces, the special tokens, and single
    # characters (plain and ## forms); nothing else.
    produced = {t for s in _train_sentences()
                for t in original.convert_ids_to_tokens(original(s, truncation=True, max_length=MAX_LEN)["input_ids"])}
    kept = set(pruned.get_vocab())
    assert produced <= kept
    assert all(len(t.removeprefix("##")) == 1 or t in original.all_special_tokens for t in kept - produced)
    info = json.loads((bert_export / "movprune_export.json").read_text())
    assert info["vocab"]["kept"] == len(kept) and info["vocab"]["original_size"] == len(original)
    # Plain transformers: a pipeline over the folder answers as over the run's model.
    texts = _train_sentences()[:8]
    assert [r["label"] for r in pipeline("text-classification", model=str(bert_export))(texts)] == \
        [r["label"] for r in pipeline("text-classification", model=str(finished_run / "model"))(texts)]


def _greedy_wordpiece(word: str, vocab: set[str], unk: str) -> list[str]:
    """WordPiece as docs/export.md states it: greedy longest match; a word with an unmatched rest is unknown."""
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start and (("##" if start else "") + word[start:end]) not in vocab:
            end -= 1
        if end == start:
            return [unk]
        pieces.append(("##" if start else "") + word[start:end])
        start = end
    return pieces


def test_a_word_outside_the_kept_vocabulary_maps_to_kept_pieces_else_unk(finished_run, bert_export):
    from transformers import AutoTokenizer

    original = AutoTokenizer.from_pretrained(finished_run / "model")
    pruned = AutoTokenizer.from_pretrained(bert_export)
    kept = set(pruned.get_vocab())
    # Whole words of the full vocabulary that the training data never produced.
    dropped = [t for t in original.get_vocab() if t.isalpha() and t.isascii() and len(t) > 4 and t not in kept]
    assert len(dropped) > 1000
    split = 0
    for word in sorted(dropped)[:300]:
        expected = _greedy_wordpiece(word, kept, pruned.unk_token)
        assert pruned.tokenize(word) == expected, word
        split += expected != [pruned.unk_token]
    assert split > 100  # most unseen words split into kept pieces
    # A character the training data never shows (and so no piece holding it): the whole word is unknown.
    assert "ß" in original.get_vocab() and "ß" not in kept
    assert pruned.tokenize("straße") == [pruned.unk_token]
    assert original.tokenize("straße") != [original.unk_token]


def _bpe_model_folder(folder: Path) -> Path:
    """A random tiny RoBERTa with its own byte-level BPE tokenizer, trained on other GLUE texts than
    SST-2's training set (so that pruning to SST-2 drops tokens and merges)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaTokenizer

    texts = []
    for name, col in (("CoLA/train.tsv", 3), ("MRPC/train.tsv", 3), ("SST-2/dev.tsv", 0), ("SST-2/train.tsv", 0)):
        with open(TINY_GLUE_DIR / name, encoding="utf-8-sig", newline="") as f:
            texts += [r[col] for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if len(r) > col]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=2500, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    state = json.loads(bpe.to_str())["model"]
    tokenizer = RobertaTokenizer(vocab=state["vocab"], merges=[tuple(m) for m in state["merges"]])
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, max_position_embeddings=64 + 2, type_vocab_size=1,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=2)
    RobertaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def roberta_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("roberta")
    model = _bpe_model_folder(root / "bpe-model")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(root / "results", model=str(model), name="bpe",
                                                      pruner={"method": "magnitude", "remaining_pct": 50},
                                                      train={"max_steps": 4})))
    proc = run_cli("run", str(recipe))
    assert proc.returncode == 0, proc.stderr
    return root / "results" / "bpe"


def test_roberta_bpe_vocab_export_keeps_the_merges_it_needs(roberta_run, tmp_path):
    from transformers import AutoTokenizer

    result = export_run(roberta_run, tmp_path / "compact", "compact", vocab="task")
    assert result.max_abs_diff <= FP32_TOL
    export_run(roberta_run, tmp_path / "dense", "dense", vocab="task")
    _same_tokens_and_logits(roberta_run / "model", tmp_path / "dense")

    original = json.loads((roberta_run / "model" / "tokenizer.json").read_text())["model"]
    pruned = json.loads((tmp_path / "dense" / "tokenizer.json").read_text())["model"]
    assert pruned["type"] == "BPE" and len(pruned["vocab"]) < len(original["vocab"])
    assert 0 < len(pruned["merges"]) < len(original["merges"])
    # Every kept merge's parts and result are kept tokens; every kept token longer than one byte is
    # built by a kept merge (the intermediates are there); the 256 byte symbols are all kept.
    vocab = pruned["vocab"]
    results = {"".join(m) for m in pruned["merges"]}
    assert all(a in vocab and b in vocab and a + b in vocab for a, b in pruned["merges"])
    base = {t for t in original["vocab"] if t not in {"".join(m) for m in original["merges"]}}
    assert base <= set(vocab) and len(base) >= 256
    assert set(vocab) - base <= results
    # A word the training data never shows still tokenizes, into bytes and kept merges, never <unk>.
    tok = AutoTokenizer.from_pretrained(tmp_path / "dense")
    assert tok.unk_token not in tok.tokenize(" zygomorphic quixotry")
    assert tok.decode(tok(" zygomorphic quixotry")["input_ids"], skip_special_tokens=True) == " zygomorphic quixotry"


def test_roberta_onnx_vocab_export_gives_the_original_logits(roberta_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from transformers import AutoTokenizer

    from movprune.export import load_export

    export_run(roberta_run, tmp_path / "onnx", "onnx", vocab="task")
    texts = _train_sentences()[:40]
    ref, _ = _logits(roberta_run / "model", texts)
    batch = AutoTokenizer.from_pretrained(tmp_path / "onnx")(texts, padding=True, truncation=True,
                                                              max_length=MAX_LEN, return_tensors="pt")
    got = load_export(tmp_path / "onnx")(**dict(batch))["logits"]
    assert (got - ref).abs().max() <= FP32_TOL


def test_vocab_file_keeps_only_that_corpus(finished_run, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the movie was great\n\nthe plot was thin\n", encoding="utf-8")
    export_run(finished_run, tmp_path / "out", "dense", vocab=str(corpus))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tok.tokenize("the movie was thin") == ["the", "movie", "was", "thin"]
    assert tok.tokenize("plot great") == ["plot", "great"]
    info = json.loads((tmp_path / "out" / "movprune_export.json").read_text())["vocab"]
    assert info["texts"] == 2


def test_unsupported_tokenizer_and_bad_vocab_requests_are_one_line_errors(finished_run_copy, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    missing = run_cli("export", str(finished_run_copy), "--to", str(tmp_path / "a"), "--format", "dense",
                      "--vocab", str(tmp_path / "nope.txt"), "--no-latency")
    assert missing.returncode == 2 and "--vocab" in missing.stderr and "Traceback" not in missing.stderr

    model_dir = finished_run_copy / "model"
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "movie"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    with pytest.raises(ExportError, match="WordLevel"):
        tokenizer_state(word_level)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model_dir / name).unlink()
    word_level.save_pretrained(model_dir)
    proc = run_cli("export", str(finished_run_copy), "--to", str(tmp_path / "b"), "--format", "dense",
                   "--vocab", "task", "--no-latency")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert proc.returncode == 2 and len(errors) == 1 and "WordLevel" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "b").exists()


def test_masked_lm_head_loses_the_same_rows(tmp_path):
    """A tied masked-LM head keeps the kept rows of its decoder and bias: the pruned model's logits are
    the original's at the kept columns, and it saves and reloads as a plain transformers model."""
    from transformers import BertConfig, BertForMaskedLM

    from movprune.export.vocab import VocabPlan, prune_embeddings, remap_batch

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, pad_token_id=0)).eval()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()
    pruned = BertForMaskedLM(model.config.__class__.from_dict(model.config.to_dict())).eval()
    pruned.load_state_dict(model.state_dict())
    kept = [0, 3, 7, 50, 51, 120, 299]
    prune_embeddings(pruned, VocabPlan(kept, {}, 300, 0, 0))
    pruned.save_pretrained(tmp_path)
    reloaded = BertForMaskedLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[3, 7, 50, 299, 120, 0]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.inference_mode():
        ref = model(**batch).logits[..., kept]
        got = reloaded(**remap_batch(batch, VocabPlan(kept, {}, 300, 0, 0))).logits
    assert reloaded.config.vocab_size == len(kept) and got.shape == ref.shape
    assert (got - ref).abs().max() <= FP32_TOL
