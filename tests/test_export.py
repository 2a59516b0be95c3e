"""movprune export: compact and sparse exports compute what the dense model computes, are smaller,
and load in a fresh process (compact through transformers' remote code, sparse with the loader)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from movprune.errors import ExportError, ForeignFolderError
from movprune.export import export_run, folder_stats, load_sparse
from movprune.export.folders import staged_folder
from movprune.export.sparse import SparseLinear, choose_sparse_max_rows, quantize_int8

from conftest import TINY_GLUE_DIR, run_cli

HEAD = 16  # tiny-random-bert: hidden 64, 4 heads of 16, FFN 256, 2 layers
HIDDEN, HEADS, FFN = 64, 4, 256
FP32_TOL = 1e-4


@pytest.fixture(scope="module")
def tiny_run(finished_run) -> Path:
    """The session's real (short) movement-pruning run of tiny-random-bert on SST-2 (read only)."""
    return finished_run


def _p(layer: int, name: str) -> str:
    return f"bert.encoder.layer.{layer}.{name}"


@pytest.fixture(scope="module")
def emptied_run(tiny_run, tmp_path_factory) -> Path:
    """The run with heads and neurons emptied on purpose, on top of its real masks, and random
    biases everywhere, so that removing a part without folding its constant output would show.

    Layer 0: head 1 loses its value rows, head 2 its output columns; neurons 0-9 lose their input
    rows, 10-19 their output columns. Layer 1: every head loses its value rows, every neuron its
    input row (the layer keeps no head and no neuron).
    """
    run = tmp_path_factory.mktemp("emptied") / "run"
    shutil.copytree(tiny_run, run)
    path = run / "model" / "model.safetensors"
    sd = load_file(path)
    gen = torch.Generator().manual_seed(1)
    for k in sd:
        if k.startswith("bert.encoder.") and k.endswith(".bias") and "LayerNorm" not in k:
            sd[k] = 0.5 * torch.randn(sd[k].shape, generator=gen)
    sd[_p(0, "attention.self.value.weight")][1 * HEAD:2 * HEAD] = 0
    sd[_p(0, "attention.output.dense.weight")][:, 2 * HEAD:3 * HEAD] = 0
    sd[_p(0, "intermediate.dense.weight")][0:10] = 0
    sd[_p(0, "output.dense.weight")][:, 10:20] = 0
    sd[_p(1, "attention.self.value.weight")][:] = 0
    sd[_p(1, "intermediate.dense.weight")][:] = 0
    save_file(sd, path, metadata={"format": "pt"})
    return run


def _sentences(glue_dir: Path, n: int = 48) -> list[str]:
    with open(glue_dir / "SST-2" / "dev.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:n + 1]
    return [r[0] for r in rows]


# Loads each (kind, folder) as a user would, in one fresh process, and writes its logits.
_LOADER = r"""
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
jobs, texts, out_file = json.load(open(sys.argv[1]))
out = {}
for name, kind, folder in jobs:
    if kind == "sparse":
        from movprune.export import load_sparse
        model = load_sparse(folder)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=kind == "compact")
    model.eval()
    batch = AutoTokenizer.from_pretrained(folder)(texts, padding=True, truncation=True, max_length=64,
                                                  return_tensors="pt")
    with torch.inference_mode():
        out[name] = {"class": type(model).__name__, "logits": model(**batch).logits.tolist()}
json.dump(out, open(out_file, "w"))
"""


def _dense_logits(folder: Path, texts: list[str]) -> torch.Tensor:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = AutoTokenizer.from_pretrained(folder)(texts, padding=True, truncation=True, max_length=64,
                                                  return_tensors="pt")
    with torch.inference_mode():
        return model(**batch).logits


@pytest.fixture(scope="module")
def exported(tiny_run, emptied_run, tmp_path_factory) -> dict:
    """Every format of both runs, exported by the library and then loaded in one fresh process
    (compact through ``trust_remote_code=True``, sparse with ``load_sparse``) on the SST-2 fixture's sentences."""
    root = tmp_path_factory.mktemp("exports")
    texts = _sentences(TINY_GLUE_DIR)
    jobs, results = [], {}
    for run_name, run in (("tiny", tiny_run), ("emptied", emptied_run)):
        for fmt in ("dense", "compact", "sparse"):
            # Kernel timing is only checked on the tiny run's sparse export (it takes seconds).
            results[f"{run_name}-{fmt}"] = export_run(run, root / f"{run_name}-{fmt}", fmt,
                                                      measure_kernels=run_name == "tiny")
            jobs.append((f"{run_name}-{fmt}", fmt, str(root / f"{run_name}-{fmt}")))
    job_file, out_file = root / "jobs.json", root / "logits.json"
    job_file.write_text(json.dumps([jobs, texts, str(out_file)]))
    # Remote code is copied into HF_MODULES_CACHE: a temporary one, never the user's.
    env = {**os.environ, "HF_MODULES_CACHE": str(root / "hf_modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _LOADER, str(job_file)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(out_file.read_text())
    return {"root": root, "results": results, "texts": texts,
            "classes": {k: v["class"] for k, v in loaded.items()},
            "logits": {k: torch.tensor(v["logits"]) for k, v in loaded.items()},
            "reference": {"tiny": _dense_logits(tiny_run / "model", texts),
                          "emptied": _dense_logits(emptied_run / "model", texts)}}


def _removable(sd: dict[str, torch.Tensor], layer: int) -> tuple[int, int]:
    """(heads, neurons) of a layer whose value rows / output columns, or input rows / output
    columns, are all zero: counted here straight from the weights."""
    v, o = sd[_p(layer, "attention.self.value.weight")], sd[_p(layer, "attention.output.dense.weight")]
    heads = sum(bool((v[h * HEAD:(h + 1) * HEAD] == 0).all() or (o[:, h * HEAD:(h + 1) * HEAD] == 0).all())
                for h in range(HEADS))
    i, w = sd[_p(layer, "intermediate.dense.weight")], sd[_p(layer, "output.dense.weight")]
    neurons = int(((i == 0).all(dim=1) | (w == 0).all(dim=0)).sum())
    return heads, neurons


def test_compact_export_removes_emptied_heads_and_neurons_and_keeps_logits(emptied_run, exported):
    sd = load_file(emptied_run / "model" / "model.safetensors")
    removable = [_removable(sd, layer) for layer in range(2)]
    assert removable[0][0] >= 2 and removable[0][1] >= 20 and removable[1] == (HEADS, FFN)

    folder = exported["root"] / "emptied-compact"
    config = json.loads((folder / "config.json").read_text())
    assert config["num_attention_heads_per_layer"] == [HEADS - removable[0][0], 0]
    assert config["intermediate_size_per_layer"] == [FFN - removable[0][1], 0]
    assert config["auto_map"]["AutoModelForSequenceClassification"] == \
        "compact_bert.CompactBertForSequenceClassification"
    assert (folder / "compact_bert.py").is_file()
    result = exported["results"]["emptied-compact"]
    assert result.details["heads_removed"] == sum(h for h, _ in removable)
    assert result.details["neurons_removed"] == sum(n for _, n in removable)

    # Each head: Q, K, V rows with biases and the output columns; each neuron: input row, bias, output column.
    per_head = 3 * (HEAD * HIDDEN + HEAD) + HIDDEN * HEAD
    per_neuron = 2 * HIDDEN + 1
    removed = sum(h * per_head + n * per_neuron for h, n in removable)
    dense = folder_stats(exported["root"] / "emptied-dense", result.encoder_prefix)
    compact = folder_stats(folder, result.encoder_prefix)
    assert compact.parameters == dense.parameters - removed
    assert compact.encoder_bytes == dense.encoder_bytes - 4 * removed

    assert exported["classes"]["emptied-compact"] == "CompactBertForSequenceClassification"
    for fmt in ("dense", "compact", "sparse"):
        diff = (exported["logits"][f"emptied-{fmt}"] - exported["reference"]["emptied"]).abs().max()
        assert diff <= FP32_TOL, fmt


def test_load_export_never_runs_the_modeling_file_a_compact_folder_ships(exported, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    from movprune.export import load_export

    folder = tmp_path / "tampered"
    shutil.copytree(exported["root"] / "emptied-compact", folder)
    (folder / "compact_bert.py").write_text("raise RuntimeError('the folder ran its own code')\n")
    model = load_export(folder)
    assert type(model).__name__ == "CompactBertForSequenceClassification"
    assert type(model).__module__ == "movprune.export.compact_bert"
    batch = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)(
        exported["texts"], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**batch).logits
    assert (logits - exported["reference"]["emptied"]).abs().max() <= FP32_TOL


def test_every_format_loads_in_a_fresh_process_with_the_dense_logits(exported):
    reference = exported["reference"]["tiny"]
    assert reference.std() > 0  # not a degenerate comparison
    for fmt in ("dense", "compact", "sparse"):
        assert exported["classes"][f"tiny-{fmt}"].endswith("BertForSequenceClassification"), fmt
        assert (exported["logits"][f"tiny-{fmt}"] - reference).abs().max() <= FP32_TOL, fmt
    manifest = json.loads((exported["root"] / "tiny-sparse" / "sparse_config.json").read_text())
    assert len(manifest["matrices"]) == 12  # 6 Linear layers x 2 layers, all 90% sparse: stored in CSR
    assert all(m["storage"] == "csr" for m in manifest["matrices"].values())
    # Every CSR matrix carries a measured kernel choice, and the loader applies it.
    loaded = load_sparse(exported["root"] / "tiny-sparse")
    layers = {f"{n}.weight": m for n, m in loaded.named_modules() if isinstance(m, SparseLinear)}
    assert {k: m.sparse_max_rows for k, m in layers.items()} == \
        {k: m["sparse_max_rows"] for k, m in manifest["matrices"].items()}
    assert set(manifest["calibration"]["matrices"]) == set(layers)


def test_sparse_is_smaller_and_int8_stays_within_its_quantisation_bound(tiny_run, exported, tmp_path):
    int8 = export_run(tiny_run, tmp_path / "int8", "sparse", int8=True, measure_kernels=False)
    fp32 = exported["results"]["tiny-sparse"]
    folders = {"dense": exported["root"] / "tiny-dense", "sparse": exported["root"] / "tiny-sparse",
               "int8": tmp_path / "int8"}
    sizes = {name: folder_stats(path, fp32.encoder_prefix).encoder_bytes for name, path in folders.items()}
    # 10% remaining: CSR with 4-byte values and 2-byte column indices is under a fifth of dense; int8
    # values shrink it further.
    assert sizes["sparse"] < sizes["dense"] / 5
    assert sizes["int8"] < 0.7 * sizes["sparse"]
    assert fp32.max_abs_diff <= FP32_TOL

    # int8 changes each weight by at most half a quantisation step (scale / 2, scale = max|w| / 127)
    # and nothing else: the int8 model equals the dense model with exactly those weights.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    dense_model = AutoModelForSequenceClassification.from_pretrained(tiny_run / "model").eval()
    quant = load_sparse(tmp_path / "int8")
    rounded = AutoModelForSequenceClassification.from_pretrained(tiny_run / "model").eval()
    for name, module in quant.named_modules():
        if isinstance(module, SparseLinear):
            w = dense_model.get_submodule(name).weight
            _, scale = quantize_int8(w)
            wq = module.dense_weight()
            assert (wq - w).abs().max() <= scale / 2 + 1e-7
            rounded.get_submodule(name).weight.data.copy_(wq)
    texts = _sentences(TINY_GLUE_DIR)
    batch = AutoTokenizer.from_pretrained(tiny_run / "model")(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        ref, q, r = dense_model(**batch).logits, quant(**batch).logits, rounded(**batch).logits
    assert (q - r).abs().max() <= FP32_TOL
    # Looser tolerance against the fp32 model: a weight error of at most 0.4% of each matrix's
    # largest weight moves the logits by well under 5% of their spread over these sentences.
    assert (q - ref).abs().max() <= 0.05 * (ref.max() - ref.min())
    assert int8.int8 and (tmp_path / "int8" / "movprune_export.json").is_file()


def test_sparse_kernel_choice_follows_the_measurements():
    # (rows, dense ms, sparse ms): sparse wins up to 64 rows, then loses; a later win is not trusted.
    assert choose_sparse_max_rows([(16, 1.0, 0.5), (64, 2.0, 1.5), (256, 4.0, 5.0), (1024, 9.0, 8.0)]) == 64
    assert choose_sparse_max_rows([(16, 1.0, 1.0)]) == 0
    assert choose_sparse_max_rows([(16, 1.0, 0.2), (64, 2.0, 0.4)]) == 64

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(48, 32, generator=gen) * (torch.rand(48, 32, generator=gen) < 0.1)
    b = torch.randn(48, generator=gen)
    layer = SparseLinear(w.to_sparse_csr(), b.clone(), sparse_max_rows=10)
    used = []
    layer.forward_sparse = lambda x, f=layer.forward_sparse: used.append("sparse") or f(x)
    layer.forward_dense = lambda x, f=layer.forward_dense: used.append("dense") or f(x)
    for shape in [(2, 5, 32), (2, 6, 32)]:  # 10 rows -> sparse, 12 rows -> dense
        x = torch.randn(*shape, generator=gen)
        assert torch.allclose(layer(x), torch.nn.functional.linear(x, w, b), atol=1e-5)
    assert used == ["sparse", "dense"]


def test_cli_export_prints_the_table_and_never_overwrites_silently(tiny_run, tmp_path):
    to = tmp_path / "out"
    proc = run_cli("export", str(tiny_run), "--to", str(to), "--format", "sparse", "--repeats", "1",
                   "--threads", "1", "--seq-length", "8")
    assert proc.returncode == 0, proc.stderr
    for text in ("dense", "sparse", "encoder MB", "b1 ms", "b32 ms", "load_sparse("):
        assert text in proc.stdout, text
    info = json.loads((to / "movprune_export.json").read_text())
    assert info["format"] == "sparse" and info["max_abs_diff"] <= FP32_TOL

    again = run_cli("export", str(tiny_run), "--to", str(to), "--format", "dense", "--no-latency")
    assert again.returncode == 2 and "--force" in again.stderr and "Traceback" not in again.stderr
    assert json.loads((to / "movprune_export.json").read_text())["format"] == "sparse"

    forced = export_run(tiny_run, to, "dense", force=True)
    assert forced.format == "dense" and not (to / "sparse_config.json").exists()


def test_failed_export_leaves_neither_folder_nor_partial_files(tmp_path):
    to = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_folder(to, force=False) as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    to.mkdir()
    (to / "keep.txt").write_text("x")
    with pytest.raises(ForeignFolderError):  # not an export movprune made: never replaced
        with staged_folder(to, force=True):
            pass
    assert (to / "keep.txt").read_text() == "x"


def test_bad_requests_are_refused_before_anything_is_written(tiny_run, tmp_path):
    from movprune.errors import RunFailedError

    unfinished = tmp_path / "unfinished"
    shutil.copytree(tiny_run, unfinished)
    (unfinished / "result.json").unlink()
    with pytest.raises(RunFailedError):
        export_run(unfinished, tmp_path / "a", "dense")
    with pytest.raises(ExportError, match="--format"):
        export_run(tiny_run, tmp_path / "b", "tflite")
    with pytest.raises(ExportError, match="--int8"):
        export_run(tiny_run, tmp_path / "c", "dense", int8=True)
    with pytest.raises(ExportError, match="outside the run"):
        export_run(tiny_run, tiny_run, "dense", force=True)
    assert (tiny_run / "result.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unfinished"]


@pytest.mark.parametrize("source", ["compact", "dense"])
def test_onnx_export_of_a_layer_without_heads_or_neurons_gives_the_dense_logits(emptied_run, tmp_path, source):
    """ONNX Runtime on the graph of the compact (layer 1 keeps no head and no neuron) or dense
    model: the run's logits within 1e-4 on real sentences, padded batches of different lengths."""
    pytest.importorskip("onnxruntime")
    from transformers import AutoTokenizer

    from movprune.export import load_export

    result = export_run(emptied_run, tmp_path / "onnx", "onnx", onnx_source=source)
    assert result.max_abs_diff is not None and result.max_abs_diff <= FP32_TOL
    if source == "compact":
        assert result.details["heads_per_layer"] == [2, 0] and result.details["intermediate_size_per_layer"][1] == 0
    session = load_export(tmp_path / "onnx")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "onnx")
    texts = _sentences(TINY_GLUE_DIR, 20)
    reference = _dense_logits(emptied_run / "model", texts)
    for size in (1, 7):
        for i in range(0, len(texts), size):
            batch = dict(tokenizer(texts[i:i + size], padding=True, return_tensors="pt"))
            got = session(**batch)["logits"]
            torch.testing.assert_close(got, reference[i:i + size], atol=FP32_TOL, rtol=0)


def test_compact_and_onnx_roberta_without_heads_in_a_layer(tmp_path):
    """RoBERTa: emptied heads and neurons are removed, a layer left with none is kept as its
    biases, and the compact model and its ONNX graph give the dense logits."""
    pytest.importorskip("onnxruntime")
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from movprune.export import bench, compact, onnx

    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=120, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
                           intermediate_size=FFN, max_position_embeddings=64, pad_token_id=1)
    model = RobertaForSequenceClassification(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".encoder." in name and name.endswith(".bias") and "LayerNorm" not in name:
                p.normal_(0, 0.5)
        first, second = model.roberta.encoder.layer
        first.attention.output.dense.weight[:, HEAD:2 * HEAD] = 0  # head 1 contributes nothing
        first.output.dense.weight[:, :100] = 0  # neurons 0-99 contribute nothing
        second.attention.self.value.weight[:] = 0  # every head outputs a constant
        second.intermediate.dense.weight[:] = 0  # every neuron is a constant
    small, plans = compact.compact_model(model)
    assert [len(p.heads_kept) for p in plans] == [HEADS - 1, 0]
    assert [len(p.neurons_kept) for p in plans] == [FFN - 100, 0]
    assert type(small).__name__ == "CompactRobertaForSequenceClassification"
    batches = [bench.check_batch(120, seed) for seed in range(2)]
    for b in batches:
        b["input_ids"][b["attention_mask"] == 0] = config.pad_token_id
    assert bench.max_abs_diff(model, small, batches) <= FP32_TOL
    folder = tmp_path
    onnx.save_onnx(small, folder, batches[0], "compact")
    model.config.save_pretrained(folder)
    assert bench.max_abs_diff(model, onnx.OnnxModel(folder), batches) <= FP32_TOL
