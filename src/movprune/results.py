"""Run folders: what a run writes, and how a finished run is told from an interrupted one.

A run folder is finished exactly when ``result.json`` exists; it is written atomically and last,
after the model, so an interrupted run never looks finished.
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path
from typing import Any

from movprune.errors import ResultExistsError, RunFailedError
from movprune.io import atomic_write_json

RESULT_FILE = "result.json"
RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"
MODEL_DIR = "model"

#: Keys every result.json has.
REQUIRED_KEYS = ("task", "model", "pruner", "target_remaining_pct", "remaining_pct", "metrics", "seed",
                 "steps", "train_seconds", "versions")


def is_finished(run_dir: str | Path) -> bool:
    """True when ``run_dir`` holds a complete, readable result."""
    try:
        load_result(run_dir)
    except RunFailedError:
        return False
    return True


def load_result(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``result.json``; raises :class:`RunFailedError` when missing or corrupt."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        raise RunFailedError(f"{run_dir}: no {RESULT_FILE} (the run is unfinished or was interrupted)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RunFailedError(f"{path}: unreadable ({e})") from None
    missing = [k for k in REQUIRED_KEYS if k not in data] if isinstance(data, dict) else list(REQUIRED_KEYS)
    if missing:
        raise RunFailedError(f"{path}: missing keys {', '.join(missing)}")
    data["run_dir"] = str(run_dir)
    return data


def prepare_run_dir(run_dir: str | Path, force: bool, resume: bool = False) -> Path:
    """Create an empty run folder. A finished run is only replaced with ``force``; leftovers of an
    unfinished run are cleared, since they are not results, unless ``resume`` continues it (from a
    checkpoint the caller found in it)."""
    run_dir = Path(run_dir)
    if is_finished(run_dir) and not force:
        raise ResultExistsError(
            f"{run_dir} already holds a finished run ({RESULT_FILE}); pass --force to overwrite it, or "
            "set name=<other> to keep both")
    if resume and run_dir.is_dir():
        return run_dir
    if run_dir.exists():
        # Remove the result first: if the deletion is interrupted, the folder is not "finished".
        (run_dir / RESULT_FILE).unlink(missing_ok=True)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    return run_dir


def write_result(run_dir: str | Path, result: dict[str, Any]) -> None:
    """Write ``result.json`` atomically (the last file of a run)."""
    atomic_write_json(Path(run_dir) / RESULT_FILE, result)


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
    """``save_pretrained`` model and tokenizer into ``<run_dir>/model`` via a temporary folder."""
    final = Path(run_dir) / MODEL_DIR
    tmp = Path(run_dir) / f".{MODEL_DIR}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final
