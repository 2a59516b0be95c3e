"""One run on two processes (torchrun, gloo on CPU) is the same experiment as on one."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import pytest

from movprune import distributed
from movprune.errors import RecipeError
from movprune.export.api import load_run_model
from movprune.pruners.counting import prunable_linears
from movprune.recipe import load_recipe
from movprune.tasks import get_task
from movprune.training import checkpoint
from movprune.training.data import prepare_data
from movprune.training.loop import evaluate_all, run
from movprune.training.processes import check_batch_split

from conftest import REPO

# L0 in target mode: a controller, stochastic gates and a final calibration, all of which must
# agree across processes. 60 evaluation examples in batches of 8: 8 batches, the last one short,
# sharded 4 + 4 over the two processes.
SETTINGS = ["pruner.method=l0", "pruner.remaining_pct=10", "train.max_steps=10", "train.log_every_steps=2",
            "train.batch_size=16", "train.eval_batch_size=8", "train.max_eval_samples=60"]


def torchrun_command(recipe_path, *overrides: str) -> list[str]:
    """``movprune run`` on two processes (torchrun, gloo on CPU)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "movprune", "run", str(recipe_path), *overrides]


def torchrun_env(columns: int = 200) -> dict[str, str]:
    """One torch thread per process, this checkout's movprune first on the path."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": str(columns),
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}


def lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_run_the_same_experiment_as_one(write_recipe):
    recipe_path = write_recipe()
    one = run(load_recipe(recipe_path, [*SETTINGS, "name=one"]))
    env = torchrun_env()
    res = subprocess.run(
        torchrun_command(recipe_path, *SETTINGS, "name=two"),
        capture_output=True, text=True, cwd=recipe_path.parent, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    # The result table, printed by one process (its title "two  (RUN_DIR)" wraps where the path is long).
    assert " ".join(res.stdout.split()).count("two (") == 1
    assert res.stderr.count("final evaluation") == 1

    run_dir = recipe_path.parent / "results" / "two"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["num_processes"] == 2 and one.num_processes == 1
    assert result["steps"] == one.steps == 10

    # Each logged step once, with the 1-process run's learning rate at every one of them.
    train_two = [r for r in lines(run_dir) if "lr" in r]
    train_one = [r for r in lines(recipe_path.parent / "results" / "one") if "lr" in r]
    assert [r["step"] for r in train_two] == [2, 4, 6, 8, 10]
    assert [r["lr"] for r in train_two] == [r["lr"] for r in train_one]
    assert sum(1 for r in lines(run_dir) if r.get("final")) == 1

    assert result["remaining_pct"] == pytest.approx(10.0, abs=0.01)
    # The processes ended with the same masks, and those are the saved model's.
    model, tokenizer, _ = load_run_model(run_dir)
    digests = result["mask_sha256_by_process"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert digests[0] == distributed.mask_digest([lin.weight for lin in prunable_linears(model).values()])

    # The sharded, gathered evaluation counts each example once: it equals a 1-process evaluation.
    recipe = load_recipe(recipe_path, [*SETTINGS, "name=two"])
    task = get_task(recipe.task)
    data = prepare_data(task, recipe, tokenizer)
    assert len(data.evals[0].features) == 60
    metrics, _ = evaluate_all(task, model, data, tokenizer, recipe, nullcontext)
    assert metrics == result["metrics"]


def _workers(launcher: int) -> dict[int, int]:
    """Local rank -> pid of the processes ``torchrun`` (pid ``launcher``) started."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            status = (proc / "status").read_text()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        ppid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))
        rank = next((int(e.split(b"=")[1]) for e in environ if e.startswith(b"LOCAL_RANK=")), None)
        if ppid == launcher and rank is not None:
            found[rank] = int(proc.name)
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds torchrun's workers in /proc")
def test_sigterm_to_one_process_stops_both_at_the_same_logging_step(write_recipe):
    """The signal reaches the second process only; at the next logging step both agree, save one
    checkpoint together and exit 143."""
    recipe_path = write_recipe(train={"max_steps": 100000, "log_every_steps": 3})
    run_dir = recipe_path.parent / "results" / "tiny-sst2"
    env = torchrun_env(300)
    proc = subprocess.Popen(
        torchrun_command(recipe_path),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=recipe_path.parent, env=env)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (run_dir / "metrics.jsonl").exists() and proc.poll() is None:
            time.sleep(0.1)
        assert (run_dir / "metrics.jsonl").exists(), "training never started"
        workers = _workers(proc.pid)
        assert sorted(workers) == [0, 1]
        os.kill(workers[1], signal.SIGTERM)
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:  # a failed run: its workers too, not only the launcher
            for pid in _workers(proc.pid).values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.kill()
    # Each process stopped on purpose at the same step (torchrun then reports the exit codes, 143).
    stops = re.findall(r"interrupted: stopped by SIGTERM after step (\d+) of 100000", stderr)
    assert len(stops) == 2 and stops[0] == stops[1], stderr[-3000:]
    assert "exitcode  : 143" in stderr and "movprune/training" not in stderr  # no traceback of ours
    ckpt = checkpoint.latest(run_dir)
    assert ckpt is not None and not (run_dir / "result.json").exists()
    assert (ckpt / "random_states_0.pkl").is_file() and (ckpt / "random_states_1.pkl").is_file()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    last_logged = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert state["step"] == last_logged == int(stops[0]) and state["step"] % 3 == 0


def test_the_global_batch_must_split_evenly_over_the_processes(write_recipe):
    recipe = load_recipe(write_recipe(), ["train.batch_size=15"])
    check_batch_split(recipe, 1)
    check_batch_split(recipe, 3)
    with pytest.raises(RecipeError, match=r"train.batch_size=15.*multiple of 2: set train.batch_size=16"):
        check_batch_split(recipe, 2)


def test_a_failure_on_the_main_process_reaches_every_process():
    # The rebuilt error keeps its type and message, whatever its constructor takes.
    error = distributed._rebuild(RecipeError, "recipe.yaml: bad")
    assert isinstance(error, RecipeError) and str(error) == "recipe.yaml: bad"
    assert distributed.main_first(lambda: 7) == 7  # one process: just runs it


def test_two_processes_keep_the_schedule_lr_and_kept_counts_of_one(write_recipe):
    """What docs/multi-gpu.md promises equal between 1 and 2 processes: the steps, the learning
    rate and the pruning schedule at every logged step, and how many weights each matrix keeps.
    Which weights are kept is not promised: each process draws its own dropout for its share of
    the batch and gradients are summed in another order, so the training loss differs a little
    (checked within 0.05 here) and so may the masks and the metrics."""
    settings = ["pruner.method=movement", "pruner.remaining_pct=10", "train.max_steps=10",
                "train.log_every_steps=2", "train.batch_size=16", "train.eval_batch_size=8",
                "train.max_eval_samples=60"]
    recipe_path = write_recipe()
    one = run(load_recipe(recipe_path, [*settings, "name=one"]))
    env = torchrun_env()
    res = subprocess.run(
        torchrun_command(recipe_path, *settings, "name=two"),
        capture_output=True, text=True, cwd=recipe_path.parent, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    results_dir = recipe_path.parent / "results"
    two = json.loads((results_dir / "two" / "result.json").read_text())
    logged_one = [r for r in lines(results_dir / "one") if "lr" in r]
    logged_two = [r for r in lines(results_dir / "two") if "lr" in r]
    assert [r["step"] for r in logged_two] == [r["step"] for r in logged_one] == [2, 4, 6, 8, 10]
    assert [r["lr"] for r in logged_two] == [r["lr"] for r in logged_one]
    assert [r["remaining_pct"] for r in logged_two] == [r["remaining_pct"] for r in logged_one]
    assert two["remaining_by_module"] == one.remaining_by_module  # kept counts, matrix by matrix
    assert two["remaining_pct"] == one.remaining_pct
    for a, b in zip(logged_one, logged_two):
        assert abs(a["loss_task"] - b["loss_task"]) < 0.05
