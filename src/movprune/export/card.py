"""The model card (``README.md`` with Hugging Face YAML metadata) written into every export.

Everything on it is read from the run folder (``result.json``, ``recipe.yaml``) and the export
itself: nothing is typed by hand, so the card cannot disagree with the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from movprune import identity, results, tasks
from movprune.models import hub_id
from movprune.tasks.config import DatasetConfig

CARD_FILE = "README.md"
_PIPELINE_TAGS = {"text_classification": "text-classification", "regression": "text-classification",
                  "extractive_qa": "question-answering"}
_FORMAT_TEXT = {
    "dense": "an ordinary `transformers` model whose pruned weights are zeros",
    "compact": "emptied attention heads and FFN neurons physically removed (custom code: load with "
               "`trust_remote_code=True`)",
    "sparse": "pruned matrices stored in CSR (load with movprune's `load_sparse`)",
    "onnx": "an ONNX graph (`model.onnx`) for ONNX Runtime",
}


def _format_text(fmt: str, int8: bool) -> str:
    if fmt == "compact" and int8:
        return ("emptied attention heads and FFN neurons physically removed, Linear weights and embedding tables "
                "stored as int8 with one fp32 scale per row (load with movprune's `load_export`: transformers "
                "cannot load int8 weights)")
    return _FORMAT_TEXT[fmt] + (", weights quantized to int8" if int8 else "")


def _task_of(recipe: dict[str, Any]) -> tasks.Task | None:
    try:
        dataset = recipe.get("dataset")
        return tasks.get_task(str(recipe.get("task")), DatasetConfig(**dataset) if dataset else None)
    except (KeyError, TypeError, ValueError):
        return None


def card_metadata(result: dict[str, Any], recipe: dict[str, Any], fmt: str, int8: bool = False) -> dict[str, Any]:
    """The card's YAML metadata (``base_model``, ``datasets``, ``metrics``, ``tags``, ``model-index``)."""
    from huggingface_hub import EvalResult, ModelCardData

    task = _task_of(recipe)
    family = task.family if task is not None else None
    dataset = task.hub_dataset() if task is not None else None
    method = str(result.get("pruner"))
    metrics = result.get("metrics") or {}
    eval_split = task.evaluation_splits(recipe.get("eval_split"))[0][0] if task else (
        recipe.get("eval_split") or "validation")
    pipeline_tag = _PIPELINE_TAGS.get(family or "")
    evals = []
    if dataset is not None and pipeline_tag:
        evals = [EvalResult(task_type=pipeline_tag, dataset_type=dataset[0],
                            dataset_name=f"{dataset[0]}" + (f" {dataset[1]}" if dataset[1] else ""),
                            dataset_config=dataset[1], dataset_split=eval_split, metric_type=name,
                            metric_name=name, metric_value=round(float(value), 2))
                 for name, value in metrics.items()]
    tags = ["pruning", "movement-pruning", "movprune", f"{method.replace('_', '-')}-pruning",
            f"{fmt}-export", *(["int8"] if int8 else [])]
    data = ModelCardData(
        base_model=hub_id(str(result.get("model"))), datasets=[dataset[0]] if dataset else None,
        metrics=sorted({m.removesuffix("_mm") for m in metrics}) or None, tags=tags,
        library_name="transformers" if fmt in ("dense", "compact") and not int8 else None, pipeline_tag=pipeline_tag,
        model_name=str(result.get("name")) if evals else None, eval_results=evals or None)
    return data.to_dict()


def _model_text(spec: str) -> str:
    base = hub_id(spec)
    if base is None:
        return f"`{spec}`"
    return f"[{base}](https://huggingface.co/{base})" + (f" (movprune's `{spec}`)" if base != spec else "")


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}%"


def _size_lines(sizes: dict[str, dict[str, int]]) -> list[str]:
    export, dense = sizes["export"], sizes["dense"]
    rows = [f"| {part} | {export[part] / 1e6:.2f} | {dense[part] / 1e6:.2f} |"
            for part in ("embeddings", "encoder", "head", "other", "total")]
    return ["## Size on disk", "",
            f"Bytes of the files of this folder and of the run's dense model (MB = 10⁶ bytes; this export is "
            f"{export['total'] / dense['total']:.1%} of the dense model). Embeddings, encoder and head are the "
            "bytes of their weights; other is everything else (configuration, tokenizer, this card, file "
            "headers, graph structure), so the parts add up to the total.", "",
            "| part | this export MB | dense model MB |", "| --- | ---: | ---: |", *rows, ""]


def _eval_lines(evaluation: dict[str, Any]) -> list[str]:
    rows = [f"| {name} | {float(evaluation['run_metrics'][name]):.2f} | {float(value):.2f} | "
            f"{0.0 - evaluation['drop_pts'][name]:+.2f} |"
            for name, value in evaluation["metrics"].items() if name in evaluation["run_metrics"]]
    verdict = ("within" if evaluation["within_tolerance"] else "**more than**") + \
        f" the tolerance of {evaluation['tolerance_pts']:g} points"
    return ["## Accuracy of this file", "",
            f"This export itself, evaluated by movprune in {evaluation['runtime']} on the same "
            f"{evaluation['examples']} evaluation examples as the run, with its own tokenizer: the drop is {verdict}.",
            "", "| metric | the run (PyTorch) | this export | change |", "| --- | ---: | ---: | ---: |", *rows, ""]


def model_card(run_dir: str | Path, fmt: str, load_hint: str, max_abs_diff: float | None,
               sizes: dict[str, dict[str, int]] | None = None, evaluation: dict[str, Any] | None = None,
               vocab: dict[str, Any] | None = None, int8: bool = False) -> str:
    """The model card of an export of the run in ``run_dir`` in format ``fmt`` (with its sizes on
    disk, its own evaluation and its vocabulary pruning when given)."""
    run_dir = Path(run_dir)
    result = results.load_result(run_dir).as_dict()
    recipe_text = (run_dir / results.RECIPE_FILE).read_text(encoding="utf-8")
    recipe = identity.saved_recipe_or_none(run_dir) or {}
    meta = card_metadata(result, recipe, fmt, int8)
    method = str(result.get("pruner"))
    target = result.get("target_remaining_pct")
    distill = result.get("distill")
    metrics = result.get("metrics") or {}
    # A folder written through the library API: the user's code trained and evaluated the model.
    library = result.get("source") == "library"
    measured = ("Measured by the training code that fine-pruned the model with movprune's library API "
                "(in %)." if library else "Measured by movprune at the end of the run, on the recipe's evaluation "
                "split (in %).")
    recipe_intro = ("The pruner and settings the training code recorded (it ran its own loop, so "
                    "`movprune run` on this file trains with movprune's loop instead):" if library else
                    "The run's resolved recipe (`movprune run recipe.yaml` reproduces it):")
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "",
        f"# {result.get('name')}", "",
        f"{_model_text(str(result.get('model')))} fine-pruned on the task `{result.get('task')}` with "
        f"movprune ({method} pruning; Sanh, Wolf & Rush 2020, *Movement "
        f"Pruning: Adaptive Sparsity by Fine-Tuning*). This folder is the **{fmt}** export: "
        f"{_format_text(fmt, int8)}.", "",
        "| | |", "| --- | --- |",
        f"| pruning method | {method} |",
        f"| budget (target remaining encoder weights) | {'dense (no pruning)' if target is None else _pct(target)} |",
        f"| remaining encoder weights (measured) | {_pct(result.get('remaining_pct'))} |",
        f"| training steps | {result.get('steps')} |",
        f"| distillation | {'teacher ' + str(distill.get('teacher_spec')) if distill else 'none'} |",
        f"| seed | {result.get('seed')} |",
        "", "Remaining weights count the encoder's Linear matrices (Q, K, V, attention output, FFN); "
        "embeddings and the task head stay dense, as in the paper.", "",
        "## Metrics", "", measured, "", "| metric | value |", "| --- | --- |",
        *(f"| {name} | {float(value):.2f} |" for name, value in metrics.items()), "",
    ]
    if vocab:
        lines += [f"The vocabulary was pruned to the {vocab['kept']:,} of {vocab['original_size']:,} tokens that "
                  f"{vocab['corpus']} produces at {vocab['max_length']} tokens (plus the special tokens); the "
                  "tokenizer and the embedding rows were rewritten together. A word outside it splits into kept "
                  "pieces where it can, else becomes the unknown token.", ""]
    if sizes:
        lines += _size_lines(sizes)
    if evaluation:
        lines += _eval_lines(evaluation)
    lines += ["## Use it", "", "```python", load_hint, "```", ""]
    if max_abs_diff is not None:
        lines += [f"The export's outputs were checked against the run's dense model: max |difference| "
                  f"{max_abs_diff:.2e} on a check batch.", ""]
    lines += ["## Recipe", "", recipe_intro, "",
              "```yaml", recipe_text.rstrip(), "```", ""]
    return "\n".join(lines)
