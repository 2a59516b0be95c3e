"""The accuracy and the size of what ships: --eval measures the export in its own runtime, int8 ONNX
stays close to fp32, sizes on disk add up to the files, refused combinations are one line."""

from __future__ import annotations

import csv
import json

import pytest

from movprune.export import export_run, load_export
from movprune.export.evaluate import ExportEval
from movprune.export.folders import folder_bytes
from movprune.export.sizes import sizes_on_disk

from conftest import TINY_GLUE_DIR, run_cli

#: int8 ONNX against fp32 ONNX: max |logit difference| at most this fraction of the fp32 logits'
#: spread over the sentences (weights move by at most half a quantization step of their matrix).
INT8_TOL_OF_SPREAD = 0.05


def _dev_sentences(n: int = 48) -> list[str]:
    with open(TINY_GLUE_DIR / "SST-2" / "dev.tsv", encoding="utf-8", newline="") as f:
        return [r[0] for r in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:n + 1]]


def test_eval_of_a_dense_export_reproduces_the_runs_metric_exactly(finished_run, tmp_path):
    to = tmp_path / "dense"
    proc = run_cli("export", str(finished_run), "--to", str(to), "--format", "dense", "--eval", "--no-latency")
    assert proc.returncode == 0, proc.stderr
    run_metric = json.loads((finished_run / "result.json").read_text())["metrics"]["accuracy"]
    evaluation = json.loads((to / "movprune_export.json").read_text())["evaluation"]
    assert evaluation["metrics"]["accuracy"] == run_metric  # fp32 run, the same 64 examples
    assert evaluation["examples"] == 64 and evaluation["runtime"] == "pytorch"
    assert evaluation["drop_pts"] == {"accuracy": 0.0} and evaluation["within_tolerance"]
    assert f"accuracy of this export (pytorch, 64 examples): {run_metric:.2f}" in proc.stdout
    card = (to / "README.md").read_text()
    assert "## Accuracy of this file" in card and f"| accuracy | {run_metric:.2f} | {run_metric:.2f} | +0.00 |" in card
    assert "warning" not in proc.stderr


def test_int8_onnx_stays_near_fp32_and_is_evaluated_in_onnx_runtime(finished_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from transformers import AutoTokenizer

    fp32 = export_run(finished_run, tmp_path / "fp32", "onnx")
    int8 = export_run(finished_run, tmp_path / "int8", "onnx", int8=True, evaluate=True)
    assert int8.details["int8_ops"] == ["MatMul", "Gather"] and int8.details["int8_tables"] == 3  # word, position, type
    assert int8.details["quantized_node_counts"]["MatMulInteger"] >= 12  # the encoder's 12 Linear layers at least
    texts = _dev_sentences()
    batch = dict(AutoTokenizer.from_pretrained(tmp_path / "int8")(texts, padding=True, return_tensors="pt"))
    a = load_export(tmp_path / "fp32")(**batch)["logits"]
    b = load_export(tmp_path / "int8")(**batch)["logits"]
    spread = float(a.max() - a.min())
    assert spread > 0 and 0 < float((a - b).abs().max()) <= INT8_TOL_OF_SPREAD * spread
    assert int8.evaluation["runtime"] == "onnxruntime" and int8.evaluation["examples"] == 64
    # The int8 graph's weights: embeddings and encoder about a quarter of fp32's.
    small, big = int8.sizes["export"], fp32.sizes["export"]
    assert small["embeddings"] < 0.3 * big["embeddings"] and small["encoder"] < 0.3 * big["encoder"]


@pytest.mark.parametrize("fmt, options", [("dense", {}), ("compact", {"vocab": "task"}),
                                          ("sparse", {"measure_kernels": False, "vocab": "task"}),
                                          ("onnx", {"int8": True, "vocab": "task"})])
def test_sizes_add_up_to_the_files_on_disk(finished_run, tmp_path, fmt, options):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    to = tmp_path / fmt
    result = export_run(finished_run, to, fmt, **options)
    info = json.loads((to / "movprune_export.json").read_text())
    for folder, sizes in ((to, result.sizes["export"]), (finished_run / "model", result.sizes["dense"])):
        assert sizes == sizes_on_disk(folder, result.encoder_prefix)  # the card and info state their own folder
        assert sizes["total"] == folder_bytes(folder)
        assert sizes["embeddings"] + sizes["encoder"] + sizes["head"] + sizes["other"] == sizes["total"]
        assert min(sizes.values()) > 0
    assert info["sizes"] == result.sizes
    if fmt in ("compact", "sparse"):
        assert result.max_abs_diff <= 1e-4  # checked against the run's model on the same texts
    dense = result.sizes["dense"]
    # tiny-random-bert: 30,522 x 64 word, 512 x 64 position, 2 x 64 token-type rows and a LayerNorm, fp32.
    assert dense["embeddings"] == 4 * (30522 * 64 + 512 * 64 + 2 * 64 + 2 * 64)
    if options.get("vocab") and fmt in ("compact", "sparse"):
        kept = result.vocab["kept"]
        assert result.sizes["export"]["embeddings"] == dense["embeddings"] - 4 * 64 * (30522 - kept)
    assert f"| total | {result.sizes['export']['total'] / 1e6:.2f} | {dense['total'] / 1e6:.2f} |" in \
        (to / "README.md").read_text()


def test_a_drop_beyond_the_tolerance_is_a_visible_warning(finished_run, tmp_path, monkeypatch):
    import movprune.export.api as api

    real = api.evaluate_model

    def worse(*args, **kwargs) -> ExportEval:
        ev = real(*args, **kwargs)
        ev.metrics = {k: v - 2.0 for k, v in ev.metrics.items()}
        ev.drop_pts = {k: 2.0 for k in ev.drop_pts}
        ev.within_tolerance = False
        return ev

    monkeypatch.setattr(api, "evaluate_model", worse)
    proc = run_cli("export", str(finished_run), "--to", str(tmp_path / "d"), "--format", "dense", "--eval",
                   "--eval-tolerance-pts", "1", "--no-latency")
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr and "2.00 points below the run's" in proc.stderr
    assert "**more than** the tolerance of 1 points" in (tmp_path / "d" / "README.md").read_text()


@pytest.mark.parametrize("args, needle", [
    (["--format", "dense", "--int8"], "--int8 applies to --format onnx, sparse, compact only (not dense)"),
    (["--format", "dense", "--eval", "--eval-tolerance-pts", "-1"], "--eval-tolerance-pts -1"),
    (["--format", "dense", "--eval", "--data-dir", "/nonexistent/glue"], "--data-dir /nonexistent/glue"),
])
def test_refused_combinations_are_one_line_errors(finished_run, tmp_path, args, needle):
    proc = run_cli("export", str(finished_run), "--to", str(tmp_path / "x"), *args, "--no-latency")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert "Traceback" not in proc.stderr and proc.returncode == 2, proc.stderr
    assert len(errors) == 1 and needle in errors[0], proc.stderr
    assert not (tmp_path / "x").exists()


def test_onnx_task_model_feeds_the_tasks_own_evaluate(finished_run, tmp_path):
    """The ONNX Runtime wrapper gives the task what a torch model would: the same accuracy as the
    PyTorch model on the same features (fp32 graph)."""
    pytest.importorskip("onnxruntime")
    export_run(finished_run, tmp_path / "onnx", "onnx", onnx_source="dense")
    from transformers import AutoTokenizer

    from movprune.export.evaluate import evaluate_model

    tok = AutoTokenizer.from_pretrained(tmp_path / "onnx")
    onnx_eval = evaluate_model(load_export(tmp_path / "onnx"), tok, finished_run, "onnxruntime")
    torch_eval = evaluate_model(load_export(finished_run / "model"), tok, finished_run, "pytorch")
    assert onnx_eval.metrics == torch_eval.metrics
    assert onnx_eval.examples == torch_eval.examples == 64
