"""Shared test fixtures: offline mode, a per-session tokenisation cache, the real data, recipes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
GLUE_DIR = SHARED_DATA / "glue"
SQUAD_DIR = SHARED_DATA / "squad"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """One tokenisation cache per test session, never the user's."""
    path = tmp_path_factory.mktemp("movprune-cache")
    old = os.environ.get("MOVPRUNE_CACHE")
    os.environ["MOVPRUNE_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MOVPRUNE_CACHE", None)
    else:
        os.environ["MOVPRUNE_CACHE"] = old


@pytest.fixture
def glue_dir() -> Path:
    """The real GLUE files in ../shared/data/glue."""
    if not GLUE_DIR.is_dir():
        pytest.fail(f"{GLUE_DIR} not found: tests need ../shared/data beside the repository")
    return GLUE_DIR


@pytest.fixture
def squad_dir() -> Path:
    """The real SQuAD v1.1 dev file in ../shared/data/squad."""
    if not (SQUAD_DIR / "dev-v1.1.json").is_file():
        pytest.fail(f"{SQUAD_DIR}/dev-v1.1.json not found: tests need ../shared/data beside the repository")
    return SQUAD_DIR


def tiny_recipe_dict(output_dir: Path, task: str = "sst2", **sections) -> dict:
    """A recipe for a seconds-long run of tiny-random-bert on real data."""
    recipe = {
        "name": f"tiny-{task}",
        "task": task,
        "model": "tiny-random-bert",
        "data_dir": str(GLUE_DIR),
        "seed": 0,
        "output_dir": str(output_dir),
        "pruner": {"method": "movement", "remaining_pct": 10},
        "train": {"max_steps": 12, "batch_size": 16, "lr": 1e-3, "max_seq_length": 32,
                  "max_train_samples": 256, "max_eval_samples": 64, "log_every_steps": 4},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key] = {**recipe[key], **value}
        else:
            recipe[key] = value
    return recipe


@pytest.fixture
def write_recipe(tmp_path):
    """Write a tiny recipe (see :func:`tiny_recipe_dict`) and return its path."""

    def _write(task: str = "sst2", filename: str = "recipe.yaml", **sections) -> Path:
        path = tmp_path / filename
        path.write_text(yaml.safe_dump(tiny_recipe_dict(tmp_path / "results", task, **sections)))
        return path

    return _write


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m movprune ARGS`` in a fresh process, as a user would."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "movprune", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=timeout)
