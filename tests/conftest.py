"""Shared test fixtures: offline mode, a per-session tokenisation cache, the data (tiny checked-in
copies and the real files), recipes, one shared finished run, and the CLI in-process or in a process.

Markers (registered in pyproject.toml): ``full_data`` marks checks that read the whole real files in
../shared/data (CI runs them; ``pytest -m "not full_data"`` leaves them out while iterating).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
GLUE_DIR = SHARED_DATA / "glue"
SQUAD_DIR = SHARED_DATA / "squad"
#: A few rows of each GLUE file and of SQuAD's dev file, in the original layouts (see its README).
FIXTURES = REPO / "tests" / "fixtures"
TINY_GLUE_DIR = FIXTURES / "glue"
TINY_SQUAD_DIR = FIXTURES / "squad"
#: The pruner of the session's shared :func:`finished_run`.
FINISHED_RUN_PRUNER = {"method": "movement", "remaining_pct": 10, "scope": "global"}

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The CLI's rich consoles are made when movprune.cli is imported (at collection) and keep the width
# COLUMNS gives then; each call sets its own (run_cli: 200). pytest-xdist's workers start with
# COLUMNS=80 and LINES=24, which would fix every console at 80 columns.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)
# One torch thread per test process (and, through the environment, per process a test starts): the
# models are tiny, so a second thread buys little on a quiet machine and, on a busy one, each small
# op waits for a descheduled thread (a 12-step test took 5.8 s with 2 threads, 0.4 s with 1). The
# suite's parallelism is pytest-xdist's workers instead (addopts in pyproject.toml).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    """The same count for this process's torch, should something have imported it before this file."""
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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


@pytest.fixture
def tiny_glue_dir() -> Path:
    """A few rows of every GLUE file, checked in (tests/fixtures/glue)."""
    return TINY_GLUE_DIR


@pytest.fixture
def tiny_squad_dir() -> Path:
    """SQuAD's dev file cut to 180 questions of 3 articles, checked in (tests/fixtures/squad)."""
    return TINY_SQUAD_DIR


def tiny_bert():
    """A tiny-random-bert classifier (``models.tiny_bert_config``) with seed-0 weights."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from movprune.models import tiny_bert_config

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_bert_config())


def tiny_recipe_dict(output_dir: Path, task: str = "sst2", **sections) -> dict:
    """A recipe for a seconds-long run of tiny-random-bert on the checked-in data fixtures."""
    recipe = {
        "name": f"tiny-{task}",
        "task": task,
        "model": "tiny-random-bert",
        "data_dir": str(TINY_SQUAD_DIR if task == "squad" else TINY_GLUE_DIR),
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


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """One finished run, made once per session by ``movprune run`` (in-process): the tiny recipe with
    global movement pruning to 10% remaining (matrices end at different densities), 12 steps on the
    SST-2 fixture. Shared by the run, export, inspect and global-scope tests: read it, or take
    :func:`finished_run_copy` to change it.

    Under pytest-xdist the workers share one: the first to need it makes it under a file lock in the
    session's common temporary folder, the others wait for it and read it."""
    from filelock import FileLock

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        root = tmp_path_factory.mktemp("finished-run")
    else:
        root = tmp_path_factory.getbasetemp().parent / "finished-run"
    run_dir = root / "results" / "tiny-sst2"
    with FileLock(str(root) + ".lock"):
        if not (run_dir / "result.json").is_file():
            root.mkdir(exist_ok=True)
            recipe = root / "recipe.yaml"
            recipe.write_text(yaml.safe_dump(tiny_recipe_dict(root / "results", pruner=FINISHED_RUN_PRUNER)))
            proc = run_cli("run", str(recipe))
            assert proc.returncode == 0, proc.stderr
    return run_dir


@pytest.fixture
def finished_run_copy(finished_run, tmp_path) -> Path:
    """A private copy of :func:`finished_run` that a test may change."""
    copy = tmp_path / "run-copy" / finished_run.name
    shutil.copytree(finished_run, copy)
    return copy


@dataclass
class CliOutcome:
    """What a finished command left: the same fields as :class:`subprocess.CompletedProcess`."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _working_dir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_cli(*args: str, cwd: Path | None = None) -> CliOutcome:
    """Run ``movprune ARGS`` in this process through Typer's ``CliRunner``, as a user would.

    Exit code, stdout and stderr are those a process would give: an unexpected exception exits 1
    with its traceback on stderr, so ``"Traceback" not in stderr`` checks hold in-process too.
    Use :func:`run_cli_process` where a real process matters (signals, ``sys.modules``, a timeout).
    """
    import torch
    from typer.testing import CliRunner

    from movprune.cli.main import app

    threads = torch.get_num_threads()  # `export --threads` sets it for the whole process
    with _working_dir(cwd or REPO):
        result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"}, catch_exceptions=True)
    torch.set_num_threads(threads)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return CliOutcome(list(args), result.exit_code, result.stdout, stderr)


def run_cli_process(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m movprune ARGS`` in a fresh process (seconds of imports: use sparingly)."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "movprune", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=timeout)


class Killed(BaseException):
    """Raised out of the loop from the observer: no handler of the run sees it, like SIGKILL."""


class KillAt:
    """An observer that kills the run when it logs ``step`` (a multiple of log_every_steps)."""

    def __init__(self, step: int):
        self.step = step

    def on_phase(self, text): pass
    def on_start(self, total_steps, run_dir): pass
    def on_eval(self, step, metrics): pass

    def on_step(self, step, values):
        if step == self.step:
            raise Killed


def stop_once_training(proc: subprocess.Popen, run_dir: Path, timeout: float = 120) -> str:
    """Send ``proc`` SIGTERM once its run has logged a step (``run_dir/metrics.jsonl`` exists) and
    return its stderr; ``proc`` is killed if it is still running when this returns."""
    import signal
    import time

    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (run_dir / "metrics.jsonl").exists() and proc.poll() is None:
            time.sleep(0.05)
        assert (run_dir / "metrics.jsonl").exists(), "training never started"
        proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=timeout)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
