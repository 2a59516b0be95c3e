"""The accuracy of what ships: an exported model evaluated in its own runtime on the run's task.

The run's saved recipe (``recipe.yaml``) says which task, data, evaluation split, ``max_seq_length``
and ``max_eval_samples`` the run's own metric came from; the export is evaluated on exactly those,
tokenized by the export's own tokenizer, with the task's own ``evaluate`` (the same metric code as
training). PyTorch exports run in fp32; an ONNX export runs in ONNX Runtime through
:class:`OnnxTaskModel`, which gives the task the model-like object it expects.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from movprune import results, tasks
from movprune.errors import DataError, ExportError
from movprune.export.vocab import Corpus
from movprune.recipe import Recipe, load_recipe
from movprune.training.data import load_examples, prepare_data

#: Largest drop (run's metric − export's, in points) accepted without a warning, by default.
DEFAULT_TOLERANCE_PTS = 0.5


@dataclass
class ExportEval:
    """The export's metrics beside the run's own, on the same evaluation split."""

    metrics: dict[str, float]
    run_metrics: dict[str, float]
    drop_pts: dict[str, float]  # run − export, per metric the run reported
    tolerance_pts: float
    within_tolerance: bool
    runtime: str
    examples: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (for the export info)."""
        return asdict(self)


def run_recipe(run_dir: str | Path, data_dir: str | Path | None = None) -> Recipe:
    """The run's saved recipe, validated, reading its data from ``data_dir`` when given; a
    :class:`DataError` when the data it names cannot be found."""
    path = Path(run_dir) / results.RECIPE_FILE
    recipe = load_recipe(path)
    if data_dir is not None:
        recipe = recipe.model_copy(update={"data_dir": str(data_dir)})
    task = _task(recipe)
    splits = [recipe.train_split, *(s for s, _ in task.evaluation_splits(recipe.eval_split))]
    problems = task.check_data(recipe.data_dir, splits)
    if problems:
        where = "--data-dir" if data_dir is not None else f"{path}: data_dir"
        raise DataError(f"{where} {recipe.data_dir}: {problems[0]} (a relative data_dir is read from the current "
                        "folder: run from the folder the run was made in, or pass --data-dir DIR)")
    return recipe


def _task(recipe: Recipe) -> tasks.Task:
    return tasks.get_task(recipe.task, recipe.dataset)


def run_max_seq_length(run_dir: str | Path) -> int:
    """The tokens per sequence the run trained and evaluated at."""
    recipe = load_recipe(Path(run_dir) / results.RECIPE_FILE)
    return recipe.train.max_seq_length or _task(recipe).default_max_seq_length


def task_corpus(run_dir: str | Path, data_dir: str | Path | None = None) -> Corpus:
    """The run's training split (in full) as a :class:`Corpus`, tokenized by the task's own
    preprocessing at the run's ``max_seq_length``."""
    recipe = run_recipe(run_dir, data_dir)
    task = _task(recipe)
    examples = load_examples(task, recipe.data_dir, recipe.train_split)
    max_length = recipe.train.max_seq_length or task.default_max_seq_length

    def encode(tokenizer, length: int | None) -> list[list[int]]:
        feats = task.tokenize(examples, tokenizer, max_seq_length=length or tokenizer.model_max_length,
                              doc_stride=recipe.train.doc_stride, train=True)
        return list(feats["input_ids"])

    return Corpus(f"the {recipe.task} training split ({recipe.train_split})", encode, max_length)


class _Outputs(dict):
    """A dict of output tensors that also answers ``.logits`` (as transformers' outputs do)."""

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class OnnxTaskModel(nn.Module):
    """An ONNX Runtime model (:class:`~movprune.export.onnx.OnnxModel`) seen by a task's
    ``evaluate`` as a torch model: it takes a batch and returns outputs with ``.logits`` (or
    ``.start_logits`` ...), and has a (empty) parameter to say its device is the CPU."""

    def __init__(self, session_model):
        super().__init__()
        self.session_model = session_model
        self.config = session_model.config
        self._device_marker = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, **batch: torch.Tensor) -> _Outputs:
        return _Outputs(self.session_model(**batch))


def evaluate_model(model: Any, tokenizer, run_dir: str | Path, runtime: str,
                   tolerance_pts: float = DEFAULT_TOLERANCE_PTS, data_dir: str | Path | None = None) -> ExportEval:
    """Evaluate ``model`` (a torch model, or an ONNX Runtime ``OnnxModel`` when ``runtime`` is
    ``onnxruntime``) with ``tokenizer`` on the run's evaluation split(s), fp32 (data from the
    recipe's ``data_dir``, or ``data_dir``)."""
    run_dir = Path(run_dir)
    recipe = run_recipe(run_dir, data_dir)
    task = _task(recipe)
    # Only the evaluation sets are needed: one training example keeps preparing the data cheap.
    eval_only = recipe.model_copy(update={"train": recipe.train.model_copy(update={"max_train_samples": 1})})
    data = prepare_data(task, eval_only, tokenizer)
    if runtime == "onnxruntime":
        model = OnnxTaskModel(model)
    metrics: dict[str, float] = {}
    for evalset in data.evals:
        with torch.inference_mode():
            out = task.evaluate(model, evalset, tokenizer, recipe.train.eval_batch_size, nullcontext)
        metrics.update(out.metrics)
    run_metrics = dict(results.load_result(run_dir).as_dict().get("metrics") or {})
    missing = sorted(set(run_metrics) - set(metrics))
    if missing:
        raise ExportError(f"--eval: the export's evaluation gave no {', '.join(missing)} (the run's metrics); "
                          "was the run's recipe.yaml changed?")
    drop = {k: float(run_metrics[k]) - float(metrics[k]) for k in run_metrics}
    return ExportEval(metrics=metrics, run_metrics=run_metrics, drop_pts=drop, tolerance_pts=tolerance_pts,
                      within_tolerance=all(d <= tolerance_pts for d in drop.values()), runtime=runtime,
                      examples=sum(len(e.features) for e in data.evals))
