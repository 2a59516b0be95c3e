"""Compact int8 export: int8 Linear weights and embedding tables with per-row scales in
safetensors, loaded back by movprune (dequantized at load) close to the fp32 compact model; a
broken dequantization or compaction fails the export; tied decoders stay tied; removed heads and
neurons stay removed; --eval and the sizes read the int8 files."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from movprune.errors import ExportError
from movprune.export import bench, export_run, folder_stats, load_export
from movprune.export.folders import folder_bytes, safetensors_header
from movprune.export.int8 import (
    INT8_CONFIG,
    INT8_TOLERANCE_OF_SPREAD,
    INT8_WEIGHTS,
    SCALE_SUFFIX,
    dequantize_rows,
    quantize_rows,
)
from movprune.export.sizes import sizes_on_disk

from conftest import TINY_GLUE_DIR, run_cli

HEAD = 16  # tiny-random-bert: hidden 64, 4 heads of 16, FFN 256, 2 layers
#: int8 against fp32 compact: max |logit difference| at most this fraction of the fp32 logits'
#: spread over the sentences (each weight moves by at most half its row's quantization step).
INT8_TOL_OF_SPREAD = 0.02


def _dev(n: int) -> tuple[list[str], list[int]]:
    with open(TINY_GLUE_DIR / "SST-2" / "dev.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:n + 1]
    return [r[0] for r in rows], [int(r[1]) for r in rows]


def _p(layer: int, name: str) -> str:
    return f"bert.encoder.layer.{layer}.{name}"


@pytest.fixture(scope="module")
def emptied_run(finished_run, tmp_path_factory) -> Path:
    """The shared run with parts emptied on purpose: layer 0 loses head 2 (output columns) and 20
    FFN neurons (output columns), so the compact export removes 1 head and 20 neurons."""
    run = tmp_path_factory.mktemp("int8-emptied") / "run"
    shutil.copytree(finished_run, run)
    path = run / "model" / "model.safetensors"
    sd = load_file(path)
    sd[_p(0, "attention.output.dense.weight")][:, 2 * HEAD:3 * HEAD] = 0
    sd[_p(0, "output.dense.weight")][:, 10:30] = 0
    save_file(sd, path, metadata={"format": "pt"})
    return run


@pytest.fixture(scope="module")
def exports(emptied_run, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("int8-exports")
    fp32 = export_run(emptied_run, root / "fp32", "compact")
    int8 = export_run(emptied_run, root / "int8", "compact", int8=True)
    return {"fp32": fp32, "int8": int8, "run": emptied_run}


def _logits(model, texts: list[str], folder: Path) -> torch.Tensor:
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(folder)(texts, padding=True, truncation=True, max_length=32,
                                                  return_tensors="pt")
    with torch.inference_mode():
        return model(**batch).logits


def test_int8_logits_stay_within_the_stated_tolerance_of_fp32_compact(exports):
    texts, _ = _dev(48)
    fp32_dir, int8_dir = Path(exports["fp32"].folder), Path(exports["int8"].folder)
    a = _logits(load_export(fp32_dir), texts, fp32_dir)
    b = _logits(load_export(int8_dir), texts, int8_dir)
    spread = float(a.max() - a.min())
    assert spread > 0 and 0 < float((a - b).abs().max()) <= INT8_TOL_OF_SPREAD * spread
    assert exports["int8"].int8 and exports["int8"].max_abs_diff <= INT8_TOL_OF_SPREAD * spread


def test_the_recorded_int8_check_is_the_folder_against_fp32_compact_on_the_check_batch(exports):
    fp32_dir, int8_dir = Path(exports["fp32"].folder), Path(exports["int8"].folder)
    batch = bench.check_batch(30522)
    a = bench.model_outputs(load_export(fp32_dir), batch)["logits"]
    b = bench.model_outputs(load_export(int8_dir), batch)["logits"]
    diff, spread = float((a - b).abs().max()), float(a.max() - a.min())
    check = exports["int8"].details["int8_check"]
    assert check["output"] == "logits" and check["tolerance_pct_of_spread"] == 100 * INT8_TOLERANCE_OF_SPREAD == 10
    assert check["max_abs_diff"] == pytest.approx(diff, rel=1e-5) and check["spread"] == pytest.approx(spread, rel=1e-5)
    assert 0 < check["diff_pct_of_spread"] == pytest.approx(100 * diff / spread, rel=1e-5)
    assert check["diff_pct_of_spread"] <= 10
    info = json.loads((int8_dir / "movprune_export.json").read_text())
    assert info["details"]["int8_check"] == check


def _one_error_line(proc) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_a_broken_dequantization_fails_the_export_and_writes_nothing(emptied_run, tmp_path, monkeypatch):
    from movprune.export import int8 as int8_mod

    # Each row dequantized with its neighbour's scale: the int8 values are right, the model is not.
    monkeypatch.setattr(int8_mod, "dequantize_rows", lambda q, scale: q.float() * scale.roll(1)[:, None])
    with pytest.raises(ExportError, match=r"the compact int8 export's logits differ from the fp32 compact model's "
                                          r"by .*, more than 10% of their spread .*; nothing was written") as e:
        export_run(emptied_run, tmp_path / "lib", "compact", int8=True)
    diff, spread = map(float, re.search(r"by ([\d.e+-]+), .* spread \(([\d.e+-]+)\)", str(e.value)).groups())
    assert diff > spread / 2  # the bug is far outside the bound (docs/export.md says so)
    assert not (tmp_path / "lib").exists()
    proc = run_cli("export", str(emptied_run), "--to", str(tmp_path / "cli"), "--format", "compact", "--int8",
                   "--no-latency")
    assert "more than 10% of their spread" in _one_error_line(proc)
    assert not (tmp_path / "cli").exists() and list(tmp_path.iterdir()) == []


def test_a_broken_compact_model_fails_the_int8_export_before_it_is_quantized(emptied_run, tmp_path, monkeypatch):
    from movprune.export import compact
    from movprune.export import int8 as int8_mod

    real = compact.compact_model

    def off_by_a_little(model):
        small, plans = real(model)
        with torch.no_grad():
            small.bert.encoder.layer[1].output.dense.bias[0] += 0.05  # one unit: LayerNorm keeps it
        return small, plans

    monkeypatch.setattr(compact, "compact_model", off_by_a_little)
    monkeypatch.setattr(int8_mod, "save_int8", lambda *a: pytest.fail("quantized a model that failed its check"))
    proc = run_cli("export", str(emptied_run), "--to", str(tmp_path / "c8"), "--format", "compact", "--int8",
                   "--no-latency")
    line = _one_error_line(proc)
    assert "the compact (fp32, before int8) export's outputs differ from the dense model's by" in line
    assert "(> 0.0001); nothing was written" in line and not (tmp_path / "c8").exists()


def test_stored_weights_are_int8_with_per_row_scales_and_dequantize_exactly(exports):
    fp32_dir, int8_dir = Path(exports["fp32"].folder), Path(exports["int8"].folder)
    assert not (int8_dir / "model.safetensors").exists() and (int8_dir / INT8_CONFIG).is_file()
    manifest = json.loads((int8_dir / INT8_CONFIG).read_text())
    # 2 layers x (Q, K, V, attention output, FFN in, FFN out) + pooler + classifier; word, position
    # and token-type embeddings.
    assert len(manifest["matrices"]) == 14 == exports["int8"].details["int8_matrices"]
    assert "bert.pooler.dense" in manifest["matrices"] and "classifier" in manifest["matrices"]
    assert manifest["embeddings"] == [f"bert.embeddings.{t}_embeddings" for t in ("word", "position", "token_type")]
    stored = load_file(int8_dir / INT8_WEIGHTS)
    reference = load_file(fp32_dir / "model.safetensors")
    loaded = load_export(int8_dir).state_dict()
    quantized = manifest["matrices"] + manifest["embeddings"]
    for name in quantized:
        q, scale, w = stored[f"{name}.weight"], stored[f"{name}.weight{SCALE_SUFFIX}"], reference[f"{name}.weight"]
        assert q.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (w.shape[0],)
        assert int(q.abs().max()) == 127  # each matrix's largest row peak maps to 127
        expected_scale = w.abs().amax(dim=1) / 127
        expected_scale[expected_scale == 0] = 1.0
        assert torch.equal(scale, expected_scale)
        assert torch.equal(q, torch.round(w / scale[:, None]).to(torch.int8))
        assert torch.equal(loaded[f"{name}.weight"], q.float() * scale[:, None])  # the model computes with q * s
        # a weight moves by at most half its row's step
        assert float(((q.float() * scale[:, None] - w).abs() - scale[:, None] / 2).max()) <= 1e-6
    # Everything else stays fp32 as in the compact export: LayerNorms, biases.
    for name, tensor in stored.items():
        if SCALE_SUFFIX not in name and name.removesuffix(".weight") not in quantized:
            assert tensor.dtype == torch.float32 and torch.equal(tensor, reference[name]), name


def test_quantize_rows_by_hand():
    w = torch.tensor([[0.5, -1.27, 0.0], [0.0, 0.0, 0.0], [2.54, 1.0, -0.01]])
    q, scale = quantize_rows(w)
    assert torch.allclose(scale, torch.tensor([0.01, 1.0, 0.02]))
    assert q.tolist() == [[50, -127, 0], [0, 0, 0], [127, 50, -0]]
    assert torch.allclose(dequantize_rows(q, scale), torch.tensor([[0.5, -1.27, 0], [0, 0, 0], [2.54, 1.0, 0]]))


def test_removed_heads_and_neurons_stay_removed(exports):
    fp32, int8 = exports["fp32"], exports["int8"]
    for key in ("heads_removed", "neurons_removed", "heads_per_layer", "intermediate_size_per_layer"):
        assert int8.details[key] == fp32.details[key], key
    # The head and the 20 neurons emptied in layer 0 are gone (the run's own pruning emptied more neurons).
    heads, neurons = int8.details["heads_per_layer"], int8.details["intermediate_size_per_layer"]
    assert heads[0] == 3 and int8.details["heads_removed"] >= 1 and neurons[0] <= 256 - 20
    int8_dir = Path(int8.folder)
    config = json.loads((int8_dir / "config.json").read_text())
    assert config["num_attention_heads_per_layer"] == heads and config["intermediate_size_per_layer"] == neurons
    ref = safetensors_header(Path(fp32.folder) / "model.safetensors")
    shapes = {k: v["shape"] for k, v in safetensors_header(int8_dir / INT8_WEIGHTS).items() if SCALE_SUFFIX not in k}
    assert shapes == {k: v["shape"] for k, v in ref.items()}
    assert shapes[_p(0, "attention.self.query.weight")] == [heads[0] * HEAD, 64]
    assert shapes[_p(0, "intermediate.dense.weight")] == [neurons[0], 64]
    model = load_export(int8_dir)
    assert model.bert.encoder.layer[0].attention.self.num_attention_heads == heads[0]
    assert model.bert.encoder.layer[0].output.dense.weight.shape == (64, neurons[0])


def test_sizes_count_the_int8_files(exports):
    fp32, int8 = exports["fp32"], exports["int8"]
    int8_dir, prefix = Path(int8.folder), int8.encoder_prefix
    sizes = int8.sizes["export"]
    assert sizes == sizes_on_disk(int8_dir, prefix) and sizes["total"] == folder_bytes(int8_dir)
    assert sum(sizes[k] for k in ("embeddings", "encoder", "head", "other")) == sizes["total"]
    # Every int8 element loses 3 of its 4 bytes; every int8 row gains a 4-byte scale.
    header = safetensors_header(int8_dir / INT8_WEIGHTS)
    for part, in_part in (("encoder", lambda n: n.startswith(prefix)), ("embeddings", lambda n: ".embeddings." in n)):
        elements = rows = 0
        for name, info in header.items():
            if in_part(name) and info["dtype"] == "I8":
                elements += info["shape"][0] * info["shape"][1]
                rows += info["shape"][0]
        assert elements > 0 and sizes[part] == fp32.sizes["export"][part] - 3 * elements + 4 * rows, part
    # tiny-random-bert's tables: 30,522 word, 512 position, 2 token-type rows of 64, and a 64-wide LayerNorm.
    assert sizes["embeddings"] == (30522 + 512 + 2) * (64 + 4) + 2 * 64 * 4
    # parameters stored: the same values as fp32, the scales are not parameters
    assert folder_stats(int8_dir, prefix).parameters == folder_stats(Path(fp32.folder), prefix).parameters


def test_plain_transformers_refuses_the_folder_and_the_card_says_how_to_load_it(exports):
    from transformers import AutoModelForSequenceClassification

    int8_dir = Path(exports["int8"].folder)
    assert "auto_map" not in json.loads((int8_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="compact_bert"):  # not a model type transformers knows
        AutoModelForSequenceClassification.from_pretrained(int8_dir, trust_remote_code=True)
    card = (int8_dir / "README.md").read_text()
    assert "from movprune.export import load_export" in card and "transformers cannot load int8" in card
    meta = card.split("---")[1]
    assert "library_name" not in meta and "- compact-export\n- int8\n" in meta
    info = json.loads((int8_dir / "movprune_export.json").read_text())
    assert info["int8"] and info["load"].startswith("from movprune.export import load_export")


def test_cli_int8_compact_with_task_vocab_and_eval_records_the_metric(finished_run, tmp_path):
    to = tmp_path / "c8"
    proc = run_cli("export", str(finished_run), "--to", str(to), "--format", "compact", "--int8", "--vocab", "task",
                   "--eval", "--no-latency")
    assert proc.returncode == 0, proc.stderr
    info = json.loads((to / "movprune_export.json").read_text())
    ev = info["evaluation"]
    assert ev["runtime"] == "pytorch (int8 weights dequantized to fp32 at load)" and ev["examples"] == 64
    assert info["vocab"]["kept"] < 30522 and json.loads((to / "config.json").read_text())["vocab_size"] == \
        info["vocab"]["kept"]
    # The recorded accuracy is the folder's own: recomputed by hand on the first 64 dev sentences at 32 tokens.
    texts, labels = _dev(64)
    predictions = _logits(load_export(to), texts, to).argmax(-1).tolist()
    by_hand = 100.0 * sum(p == y for p, y in zip(predictions, labels)) / len(labels)
    assert ev["metrics"]["accuracy"] == pytest.approx(by_hand)
    run_metric = json.loads((finished_run / "result.json").read_text())["metrics"]["accuracy"]
    assert ev["drop_pts"]["accuracy"] == pytest.approx(run_metric - by_hand)
    assert f"accuracy of this export (pytorch (int8 weights dequantized to fp32 at load), 64 examples): " \
           f"{by_hand:.2f}" in proc.stdout
    assert "14 Linear weight matrices and 3 embedding tables stored as int8" in proc.stdout
    assert "load_export(" in proc.stdout
    assert "## Accuracy of this file" in (to / "README.md").read_text()
    assert info["sizes"]["export"] == sizes_on_disk(to, info["encoder_prefix"])


def test_bad_int8_requests_are_refused(finished_run, tmp_path):
    proc = run_cli("export", str(finished_run), "--to", str(tmp_path / "x"), "--format", "dense", "--int8",
                   "--no-latency")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and "--int8 applies to --format onnx, sparse, compact only (not dense)" in errors[0]
    assert not (tmp_path / "x").exists()


def test_roberta_with_an_emptied_layer_round_trips(tmp_path):
    """RoBERTa, layer 1 left with no head and no neuron (zero-size Linear layers stay fp32 and
    empty): the int8 folder loads, keeps the per-layer sizes and stays near the compact logits."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from movprune.export import bench, compact
    from movprune.export.int8 import load_int8, save_int8

    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=256, max_position_embeddings=64, pad_token_id=1)
    model = RobertaForSequenceClassification(config).eval()
    with torch.no_grad():
        first, second = model.roberta.encoder.layer
        first.attention.output.dense.weight[:, HEAD:2 * HEAD] = 0
        second.attention.self.value.weight[:] = 0
        second.intermediate.dense.weight[:] = 0
    small, _ = compact.compact_model(model)
    manifest = save_int8(small, tmp_path)
    # layer 0's six and the head's two (dense, out_proj); layer 1's Linear layers have no weights left
    assert len(manifest["matrices"]) == 6 + 2
    assert manifest["matrices"][-2:] == ["classifier.dense", "classifier.out_proj"]
    assert not any(".layer.1." in name for name in manifest["matrices"])
    loaded = load_int8(tmp_path)
    assert type(loaded).__name__ == "CompactRobertaForSequenceClassification"
    assert loaded.config.num_attention_heads_per_layer == [3, 0] and loaded.config.intermediate_size_per_layer[1] == 0
    batches = [bench.check_batch(120, seed) for seed in range(2)]
    for b in batches:
        b["input_ids"][b["attention_mask"] == 0] = config.pad_token_id
    reference = torch.cat([bench.model_outputs(small, b)["logits"] for b in batches])
    spread = float(reference.max() - reference.min())
    assert 0 < bench.max_abs_diff(small, loaded, batches) <= INT8_TOL_OF_SPREAD * spread


def test_a_tied_masked_lm_round_trips_with_its_decoder_tied_to_the_dequantized_embeddings(tmp_path):
    """BertForMaskedLM on tiny-random-bert (decoder tied to the word embeddings), one head and 40
    neurons emptied: the decoder is not stored, the reloaded one is the dequantized embedding table
    itself, and the logits over the vocabulary stay within the stated tolerance of fp32 compact."""
    from transformers import BertForMaskedLM

    from movprune.export import compact
    from movprune.export.int8 import check_int8, load_int8, save_int8
    from movprune.models import tiny_bert_config

    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_bert_config()).eval()
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.output.dense.weight[:, HEAD:2 * HEAD] = 0
        model.bert.encoder.layer[1].output.dense.weight[:, :40] = 0
    small, _ = compact.compact_model(model)
    assert small.config.num_attention_heads_per_layer == [3, 4]
    assert small.config.intermediate_size_per_layer == [256, 216]
    manifest = save_int8(small, tmp_path)
    assert "cls.predictions.decoder" not in manifest["matrices"]
    assert "cls.predictions.transform.dense" in manifest["matrices"]
    stored = load_file(tmp_path / INT8_WEIGHTS)
    assert "cls.predictions.decoder.weight" not in stored and "cls.predictions.bias" in stored
    loaded = load_int8(tmp_path)
    assert type(loaded).__name__ == "CompactBertForMaskedLM"
    table = loaded.bert.embeddings.word_embeddings.weight
    assert loaded.cls.predictions.decoder.weight is table
    name = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(table, dequantize_rows(stored[name], stored[name + SCALE_SUFFIX]))
    batches = [bench.check_batch(30522, seed) for seed in range(3)]
    reference = torch.cat([bench.model_outputs(small, b)["logits"] for b in batches])
    spread = float(reference.max() - reference.min())
    assert 0 < bench.max_abs_diff(small, loaded, batches) <= INT8_TOL_OF_SPREAD * spread
    check = check_int8(small, loaded, batches)  # what the export checks, here with three batches
    assert check["output"] == "logits" and 0 < check["diff_pct_of_spread"] <= 100 * INT8_TOLERANCE_OF_SPREAD
