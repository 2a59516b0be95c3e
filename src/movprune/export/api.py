"""``export_run``: write a finished run's model as a dense, compact or sparse folder."""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from torch import nn

from movprune import results
from movprune.errors import ExportError, ModelError, RunFailedError
from movprune.export import bench, card, compact, compact_bert, sparse
from movprune.export import int8 as int8_mod
from movprune.export import vocab as vocab_mod
from movprune.export.evaluate import DEFAULT_TOLERANCE_PTS, evaluate_model, run_max_seq_length, run_recipe, task_corpus
from movprune.export.folders import EXPORT_INFO, check_destination, staged_folder
from movprune.export.sizes import export_format, sizes_on_disk
from movprune.export.vocab import file_corpus
from movprune.io import atomic_write_json
from movprune.models import check_no_custom_code, corrupt_model_message
from movprune.pruners.counting import prunable_linears

FORMATS = ("dense", "compact", "sparse", "onnx")
#: Formats ``--int8`` applies to.
INT8_FORMATS = ("onnx", "sparse", "compact")
#: What an ONNX export traces: the compact model (emptied heads/neurons removed) or the dense one.
ONNX_SOURCES = ("compact", "dense")
#: Largest |output difference| to the dense model accepted for exact (fp32) exports.
EXACT_TOLERANCE = 1e-4

_LOAD_HINTS = {
    "dense": "from transformers import {auto}\nmodel = {auto}.from_pretrained(\"{path}\")",
    "compact": "from transformers import {auto}\nmodel = {auto}.from_pretrained(\"{path}\", "
               "trust_remote_code=True)",
    "compact-int8": "from movprune.export import load_export\nmodel = load_export(\"{path}\")  "
                    "# int8 weights: movprune's loader, not transformers",
    "sparse": "from movprune.export import load_sparse\nmodel = load_sparse(\"{path}\")",
    "onnx": "import onnxruntime\nsession = onnxruntime.InferenceSession(\"{path}/model.onnx\")  "
            "# inputs and outputs: {path}/onnx_config.json",
}


@dataclass
class ExportResult:
    """What :func:`export_run` wrote, and how far its outputs are from the dense model's."""

    format: str
    folder: str
    run_dir: str
    architecture: str
    int8: bool
    encoder_prefix: str
    max_abs_diff: float | None
    details: dict[str, Any] = field(default_factory=dict)
    #: Bytes on disk by part (:data:`~movprune.export.folders.SIZE_PARTS` and ``total``), of the
    #: export (``export``) and of the run's dense model (``dense``).
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    vocab: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None


def load_run_model(run_dir: str | Path) -> tuple[nn.Module, Any, Path]:
    """The model (eval mode), tokenizer and model folder of a finished run."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    run_dir = Path(run_dir)
    results.load_result(run_dir)  # raises RunFailedError for an unfinished run
    model_dir = run_dir / results.MODEL_DIR
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{run_dir}: the run has no saved model ({model_dir}/config.json missing)")
    check_no_custom_code(model_dir, f"run '{run_dir}'")
    try:
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
        arch = (config.architectures or [None])[0]
        cls = getattr(transformers, arch or "", None)
        if cls is None:
            raise ModelError(f"{model_dir}: unknown model class {arch!r} in config.json")
        model = cls.from_pretrained(model_dir).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    except (OSError, ValueError, SafetensorError) as e:
        raise RunFailedError(corrupt_model_message(model_dir, e)) from None
    return model, tokenizer, model_dir


def encoder_prefix(model: nn.Module) -> str:
    """Name prefix shared by the encoder's pruned layers (``bert.encoder.layer.`` for BERT)."""
    names = list(prunable_linears(model))
    if not names:
        raise ExportError("the model has no encoder Linear layers")
    common = os.path.commonprefix(names)
    return common[:common.rfind(".") + 1]


def _auto_class(architecture: str) -> str:
    from movprune.export.compact_bert import COMPACT_CLASSES

    for suffix in ("ForSequenceClassification", "ForQuestionAnswering", "ForTokenClassification",
                   "ForMultipleChoice", "ForMaskedLM"):
        if architecture.endswith(suffix):
            return "AutoModel" + suffix
    return COMPACT_CLASSES.get(architecture, (None, "AutoModel"))[1]


def load_hint(fmt: str, architecture: str, path: str | Path, int8: bool = False) -> str:
    """The Python a user types to load an export (``int8``: of a compact int8 one)."""
    key = "compact-int8" if fmt == "compact" and int8 else fmt
    return _LOAD_HINTS[key].format(auto=_auto_class(architecture), path=path)


def _check_request(fmt: str, onnx_source: str, int8: bool, vocab: str | None, tolerance_pts: float) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if onnx_source not in ONNX_SOURCES:
        raise ExportError(f"--onnx-source {onnx_source}: choose one of {', '.join(ONNX_SOURCES)}")
    if fmt == "onnx":
        from movprune.export import onnx

        onnx.require_onnxruntime()
    if int8 and fmt not in INT8_FORMATS:
        raise ExportError(f"--int8 applies to --format {', '.join(INT8_FORMATS)} only (not {fmt}): an int8 "
                          "model has no form plain transformers loads; use --format compact --int8")
    if vocab is not None and vocab != "task" and not Path(vocab).is_file():
        raise ExportError(f"--vocab {vocab}: no such file; give 'task' (the run's training data) or a text "
                          "file with one text per line")
    if tolerance_pts < 0:
        raise ExportError(f"--eval-tolerance-pts {tolerance_pts:g}: must be 0 or more (accuracy points)")


def _write_info_and_card(tmp: Path, result: ExportResult, run_dir: Path, model_dir: Path, hint: str) -> None:
    """Write ``movprune_export.json`` and the model card into ``tmp``, both stating the folder's sizes
    on disk, themselves included: they are rewritten until the sizes they state are the sizes they
    produce (two or three rounds)."""
    prefix = result.encoder_prefix
    dense_sizes = sizes_on_disk(model_dir, prefix)
    result.sizes = {"export": sizes_on_disk(tmp, prefix), "dense": dense_sizes}
    for _ in range(8):
        atomic_write_json(tmp / EXPORT_INFO, {**asdict(result), "load": load_hint(result.format, result.architecture,
                                                                                 result.folder, result.int8),
                                              "versions": results.versions()})
        (tmp / card.CARD_FILE).write_text(card.model_card(run_dir, result.format, hint, result.max_abs_diff,
                                                          result.sizes, result.evaluation, result.vocab,
                                                          result.int8), encoding="utf-8")
        measured = sizes_on_disk(tmp, prefix)
        if measured == result.sizes["export"]:
            return
        result.sizes = {"export": measured, "dense": dense_sizes}
    raise ExportError(f"{result.folder}: the sizes on disk did not settle while writing the model card; "
                      "nothing was written. Please report this")


def _check_exact(what: str, diff: float) -> None:
    if not diff <= EXACT_TOLERANCE:
        raise ExportError(f"the {what} export's outputs differ from the dense model's by {diff:.2e} "
                          f"(> {EXACT_TOLERANCE:g}); nothing was written. Please report this")


def export_run(run_dir: str | Path, to: str | Path, fmt: str, *, int8: bool = False, force: bool = False,
               measure_kernels: bool = True, onnx_source: str = "compact",
               hub_repo: str | None = None, vocab: str | None = None, evaluate: bool = False,
               eval_tolerance_pts: float = DEFAULT_TOLERANCE_PTS, data_dir: str | Path | None = None) -> ExportResult:
    """Export a finished run's model to the folder ``to`` in format ``fmt``.

    ``dense`` copies the saved model; ``compact`` removes emptied heads and neurons (custom code,
    ``trust_remote_code=True``); ``sparse`` stores pruned matrices in CSR (``int8``: int8 values),
    timing CSR against dense kernels per matrix when ``measure_kernels``; compact ``int8`` stores its
    Linear weights and embedding tables int8 with per-row scales (:mod:`movprune.export.int8`).
    Compact and fp32 sparse exports are checked against the dense model (max |output difference|
    ≤ 1e-4) before the folder is renamed into place; for compact ``int8`` that is the fp32 compact
    model, and the reloaded int8 one is then checked against it
    (:func:`~movprune.export.int8.check_int8`: within 10% of each output's spread). ``onnx``
    traces the compact (``onnx_source``) or dense model into ``model.onnx`` and checks ONNX
    Runtime's outputs the same way; ``int8`` then quantizes it
    (:func:`movprune.export.onnx.quantize_int8`). ``vocab`` (``"task"``: the run's training data,
    or a text file) keeps only the tokens that corpus produces (:mod:`movprune.export.vocab`).
    ``evaluate`` measures the export in its own runtime on the run's evaluation split
    (:mod:`movprune.export.evaluate`); both read the run's data from its recipe's ``data_dir``, or
    from ``data_dir``. Every export holds a model card (``README.md``) whose loading
    snippet names ``hub_repo`` when the folder is to be uploaded there.
    Raises :class:`ExportError` / :class:`ResultExistsError`.
    """
    _check_request(fmt, onnx_source, int8, vocab, eval_tolerance_pts)
    run_dir, to = Path(run_dir), Path(to)
    check_destination(to, run_dir, force)
    model, tokenizer, model_dir = load_run_model(run_dir)
    if evaluate or vocab == "task":
        run_recipe(run_dir, data_dir)  # the data is there, before anything is exported
    arch = type(model).__name__
    check = [bench.check_batch(model.config.vocab_size)]
    if arch.endswith("ForMultipleChoice"):  # inputs are (batch, choices, tokens)
        check = [{k: v[None] for k, v in check[0].items()}]
    work, plan, vocab_info = model, None, None
    check_export = check
    if vocab is not None:
        corpus = task_corpus(run_dir, data_dir) if vocab == "task" else \
            file_corpus(vocab, run_max_seq_length(run_dir))
        plan = vocab_mod.plan_vocab(tokenizer, corpus)
        vocab_info = vocab_mod.summary(plan, corpus)
        work = copy.deepcopy(model)
        vocab_mod.prune_embeddings(work, plan)
        check = [vocab_mod.kept_ids_batch(b, plan) for b in check]
        check_export = [vocab_mod.remap_batch(b, plan) for b in check]

    def save_tokenizer(folder: Path) -> None:
        if plan is None:
            tokenizer.save_pretrained(folder)
        else:
            vocab_mod.save_tokenizer(tokenizer, plan, folder)

    details: dict[str, Any] = {}
    diff = None
    with staged_folder(to, force) as tmp:
        if fmt == "dense" and plan is None:
            for item in model_dir.iterdir():
                if item.is_file():
                    shutil.copy2(item, tmp / item.name)
        elif fmt == "dense":
            work.save_pretrained(tmp, safe_serialization=True)
            save_tokenizer(tmp)
            diff = bench.max_abs_diff(model, type(work).from_pretrained(tmp).eval(), check, check_export)
        elif fmt == "compact":
            small, plans = compact.compact_model(work)
            if int8:
                # The fp32 compact model is checked exactly before it is quantized, then the int8
                # reload against it within int8's tolerance: a bug in either step fails the export.
                _check_exact("compact (fp32, before int8)", bench.max_abs_diff(model, small, check, check_export))
                manifest = int8_mod.save_int8(small, tmp)
                reloaded = int8_mod.load_int8(tmp)
                int8_check = int8_mod.check_int8(small, reloaded, check_export)
            else:
                compact.save_compact(small, tmp)
                reloaded = type(small).from_pretrained(tmp).eval()
            save_tokenizer(tmp)
            diff = bench.max_abs_diff(model, reloaded, check, check_export)
            cfg = small.config
            details = {"heads_per_layer": cfg.num_attention_heads_per_layer,
                       "original_heads_per_layer": model.config.num_attention_heads,
                       "intermediate_size_per_layer": cfg.intermediate_size_per_layer,
                       "original_intermediate_size": model.config.intermediate_size,
                       "heads_removed": sum(model.config.num_attention_heads - len(p.heads_kept) for p in plans),
                       "neurons_removed": sum(model.config.intermediate_size - len(p.neurons_kept)
                                              for p in plans)}
            if int8:
                details.update(int8_matrices=len(manifest["matrices"]), int8_embeddings=len(manifest["embeddings"]),
                               int8_check=int8_check)
        elif fmt == "onnx":
            from movprune.export import onnx

            source = compact.compact_model(work)[0] if onnx_source == "compact" else work
            details = onnx.save_onnx(source, tmp, check_export[0], onnx_source)
            if int8:
                details.update(onnx.quantize_int8(tmp))
            work.config.save_pretrained(tmp)  # the architecture and sizes, for reference and loading
            save_tokenizer(tmp)
            diff = bench.max_abs_diff(model, onnx.OnnxModel(tmp), check, check_export)
            if onnx_source == "compact":
                cfg = source.config
                details.update(heads_per_layer=cfg.num_attention_heads_per_layer,
                               intermediate_size_per_layer=cfg.intermediate_size_per_layer)
        else:
            manifest = sparse.save_sparse(work, tmp, int8=int8, measure=measure_kernels)
            save_tokenizer(tmp)
            loaded = sparse.load_sparse(tmp)
            layers = sparse.sparse_layers(loaded).values()
            diff = 0.0
            for rows in (2**62, 0):  # every CSR matrix through the sparse kernel, then the dense one
                for layer in layers:
                    layer.sparse_max_rows = rows
                diff = max(diff, bench.max_abs_diff(model, loaded, check, check_export))
            details = {"matrices_csr": sum(m["storage"] == "csr" for m in manifest["matrices"].values()),
                       "matrices": len(manifest["matrices"]),
                       "sparse_max_rows": {k: m.get("sparse_max_rows", 0)
                                           for k, m in manifest["matrices"].items()}}
        if diff is not None and not int8:
            _check_exact(fmt, diff)
        prefix = encoder_prefix(model)
        evaluation = None
        if evaluate:
            from transformers import AutoTokenizer

            exported = load_export(tmp)
            runtime = "onnxruntime" if fmt == "onnx" else "pytorch"
            if fmt == "compact" and int8:
                runtime = f"pytorch ({int8_mod.RUNTIME_TEXT})"
            tokenizer = AutoTokenizer.from_pretrained(tmp, trust_remote_code=False)
            evaluation = evaluate_model(exported, tokenizer, run_dir, runtime, eval_tolerance_pts, data_dir).as_dict()
        result = ExportResult(format=fmt, folder=str(to), run_dir=str(run_dir), architecture=arch, int8=int8,
                              encoder_prefix=prefix, max_abs_diff=diff, details=details, vocab=vocab_info,
                              evaluation=evaluation)
        _write_info_and_card(tmp, result, run_dir, model_dir, load_hint(fmt, arch, hub_repo or to, int8))
    return result


def load_export(folder: str | Path, threads: int = 0) -> nn.Module:
    """Load any export (or a run's model folder) in eval mode: compact exports with movprune's own
    compact classes (the folder's modeling file is not run), compact int8 ones with
    :func:`~movprune.export.int8.load_int8` (weights dequantized to fp32 at load), sparse ones
    with :func:`load_sparse`, ONNX ones as an ONNX Runtime session
    (:class:`~movprune.export.onnx.OnnxModel`, ``threads`` intra-op threads) called like a model."""
    import transformers

    folder = Path(folder)
    fmt = export_format(folder)
    if fmt == "compact" and int8_mod.is_int8_folder(folder):
        return int8_mod.load_int8(folder)
    if fmt == "sparse":
        return sparse.load_sparse(folder)
    if fmt == "onnx":
        from movprune.export.onnx import OnnxModel

        return OnnxModel(folder, threads=threads)
    arch = json.loads((folder / "config.json").read_text(encoding="utf-8"))["architectures"][0]
    if fmt == "compact":
        # movprune's own copy of the modeling file the folder ships: loading never runs code from
        # the folder (no trust_remote_code), so a tampered compact_bert.py there is never executed.
        known = {name for name, _ in compact_bert.COMPACT_CLASSES.values()}
        if arch not in known:
            raise ExportError(f"{folder}/config.json: architecture {arch!r} is not a compact model movprune "
                              f"knows ({', '.join(sorted(known))}); re-export the run with this movprune")
        return getattr(compact_bert, arch).from_pretrained(folder).eval()
    return getattr(transformers, arch).from_pretrained(folder).eval()
