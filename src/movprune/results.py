"""Run folders' format: what a run writes, the typed ``result.json`` (:class:`RunResult`), and how a
finished run is told from an interrupted one.

A run folder is finished exactly when ``result.json`` exists; it is written atomically and last,
after the model is flushed to disk, so an interrupted run never looks finished. How folders are
created, locked and replaced is :mod:`movprune.run_folder`'s concern.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError

from movprune.errors import InvalidResultError, RunFailedError
from movprune.io import atomic_write_json, staged_dir, writing

RESULT_FILE = "result.json"
RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"
MODEL_DIR = "model"


class RunResult(BaseModel):
    """``result.json``: what a finished run measured. Read and written only through this class.

    Numbers must be finite and fields of their type (strict: ``"42"`` is not a seed). Keys unknown
    to this version are kept (``extra="allow"``), so newer and older runs' files load alike; keys
    added since the first format have defaults.
    """

    model_config = ConfigDict(strict=True, extra="allow", validate_assignment=True)

    name: str | None = None
    task: str
    model: str
    pruner: str
    pruner_config: dict[str, Any] = Field(default_factory=dict)
    target_remaining_pct: FiniteFloat | None
    remaining_pct: FiniteFloat
    remaining_by_module: dict[str, FiniteFloat] = Field(default_factory=dict)
    metrics: dict[str, FiniteFloat]
    metric_names: list[str] = Field(default_factory=list)
    pruner_summary: dict[str, Any] = Field(default_factory=dict)
    seed: int
    steps: int
    train_seconds: FiniteFloat
    eval_seconds: FiniteFloat | None = None
    bf16: bool = False
    num_processes: int = 1
    #: A SHA-256 of the baked masks on each process of the run, all equal (docs/multi-gpu.md).
    mask_sha256_by_process: list[str] = Field(default_factory=list)
    distill: dict[str, Any] | None = None
    versions: dict[str, str]
    finished_at: str | None = None
    #: What makes the result suspect although the run finished (one string or {code, message} each).
    warnings: list[str | dict[str, Any]] = Field(default_factory=list)
    #: Where the result was read from (or where the run was published); not written to the file.
    run_dir: str | None = Field(default=None, exclude=True)

    @property
    def headline_metrics(self) -> list[str]:
        """The task's metric names in order (the first is the headline), else the stored ones."""
        return self.metric_names or list(self.metrics)

    def as_dict(self) -> dict[str, Any]:
        """The JSON mapping, with ``run_dir`` (for code that still reads results by key)."""
        return {**self.model_dump(mode="json"), "run_dir": self.run_dir}

    def save(self, run_dir: str | Path) -> None:
        """Write ``<run_dir>/result.json`` atomically (the last file of a run)."""
        atomic_write_json(Path(run_dir) / RESULT_FILE, self.model_dump(mode="json"))

    @classmethod
    def load(cls, run_dir: str | Path) -> RunResult:
        """The run's result. Raises :class:`RunFailedError` when ``result.json`` is missing (the
        run is unfinished) and :class:`InvalidResultError` when it is unreadable or invalid."""
        path = Path(run_dir) / RESULT_FILE
        if not path.is_file():
            raise RunFailedError(f"{run_dir}: no {RESULT_FILE} (the run is unfinished or was interrupted)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidResultError(f"{path}: unreadable ({e})") from None
        if not isinstance(data, dict):
            raise InvalidResultError(f"{path}: not a JSON object")
        data.pop("run_dir", None)
        result = cls.checked(data, str(path))
        result.run_dir = str(run_dir)
        return result

    @classmethod
    def checked(cls, data: dict[str, Any], source: str) -> RunResult:
        """Validate ``data``; raises :class:`InvalidResultError` naming ``source`` and every bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']} "
                                 f"(got {err.get('input')!r:.60})" for err in e.errors())
            raise InvalidResultError(f"{source}: invalid result ({problems})") from None


def pruner_label(result: RunResult | dict[str, Any]) -> str:
    """The method of a run, with its pruning pattern when it is not unstructured: ``movement``,
    ``movement-hybrid``, ``magnitude-block32x32`` (runs of different patterns never share a cell)."""
    if isinstance(result, RunResult):
        result = result.as_dict()
    config = result.get("pruner_config") or {}
    pattern = config.get("pattern") or "unstructured"
    if pattern == "unstructured":
        return result["pruner"]
    if pattern == "block" and config.get("block_shape"):
        rows, cols = config["block_shape"]
        return f"{result['pruner']}-block{rows}x{cols}"
    return f"{result['pruner']}-{pattern}"


def is_finished(run_dir: str | Path) -> bool:
    """True when ``run_dir`` holds a complete, valid result."""
    try:
        RunResult.load(run_dir)
    except RunFailedError:
        return False
    return True


def load_result(run_dir: str | Path) -> RunResult:
    """:meth:`RunResult.load`."""
    return RunResult.load(run_dir)


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (the training curve)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / METRICS_FILE

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` and flush, so the curve survives an interruption."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that determine a run's numbers."""
    import accelerate
    import datasets
    import torch
    import transformers

    import movprune

    return {"movprune": movprune.__version__, "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "datasets": datasets.__version__, "accelerate": accelerate.__version__}


def save_model_atomically(model, tokenizer, run_dir: str | Path) -> Path:
    """``save_pretrained`` model and tokenizer into ``<run_dir>/model``: written into a staging
    folder, flushed to disk, then renamed into place (an older ``model/`` stays until then)."""
    final = Path(run_dir) / MODEL_DIR
    with writing(final), staged_dir(final, replace=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return final
