"""`movprune sweep`: one run per combination, resumable, failures isolated, validated up front."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from movprune.errors import RecipeError

from conftest import REPO, run_cli

# A few seconds per run on tiny-random-bert.
STEPS = 4
FAST = [f"train.max_steps={STEPS}", "train.batch_size=8", "train.max_train_samples=64",
        "train.max_eval_samples=32"]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder``: modification time (ns) and content."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def finished_runs(sweep_dir: Path) -> set[str]:
    return {p.parent.name for p in sweep_dir.glob("*/result.json")}


def check_finished_runs(sweep_dir: Path) -> None:
    """Each run folder holds the result of its own combination."""
    for run_dir in (p for p in sweep_dir.iterdir() if not p.name.startswith(".")):  # not the locks
        result = json.loads((run_dir / "result.json").read_text())
        method, level, _ = run_dir.name.split("-")
        assert result["pruner"] == method
        assert result["target_remaining_pct"] == float(level[1:])
        assert result["remaining_pct"] == pytest.approx(float(level[1:]), abs=0.1)
        assert result["steps"] == STEPS
        resolved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
        assert resolved["pruner"]["method"] == method and resolved["seed"] == 0
        assert not (run_dir / "error.txt").exists()


def test_a_killed_sweep_resumes_with_only_the_unfinished_runs_and_a_rerun_touches_nothing(write_recipe):
    recipe = write_recipe()
    sweep_dir = recipe.parent / "results" / "tiny-sst2"
    args = ["sweep", str(recipe), "--sparsity", "10,3", "--pruners", "magnitude,movement", *FAST]
    everything = {"magnitude-r10-s0", "movement-r10-s0", "magnitude-r3-s0", "movement-r3-s0"}

    # Kill -9 the sweep as soon as its first run has finished.
    proc = subprocess.Popen([sys.executable, "-m", "movprune", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 300
        while not finished_runs(sweep_dir):
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no run finished in 300 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = finished_runs(sweep_dir)
    assert 1 <= len(done) < 4
    kept = {name: snapshot(sweep_dir / name) for name in done}

    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{4 - len(done)} to run, {len(done)} finished earlier" in resumed.stderr
    assert finished_runs(sweep_dir) == everything
    assert sorted(p.name for p in sweep_dir.iterdir() if not p.name.startswith(".")) == sorted(everything)
    for name in done:  # the runs finished before the kill were not redone
        assert snapshot(sweep_dir / name) == kept[name]
    check_finished_runs(sweep_dir)

    before = snapshot(sweep_dir)
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "0 to run, 4 finished earlier" in rerun.stderr
    assert rerun.stdout.count("skipped") == 4
    assert snapshot(sweep_dir) == before


def test_an_invalid_sweep_reports_every_problem_at_once_and_runs_nothing(write_recipe):
    recipe = write_recipe()
    res = run_cli("sweep", str(recipe), "--sparsity", "10,0", "--pruners", "magnitude", "--seeds", "1,x")
    assert res.returncode == 2
    assert "--sparsity: 0: remaining weights must be in (0, 100]" in res.stderr
    assert "--seeds: 'x' is not an integer seed" in res.stderr

    res = run_cli("sweep", str(recipe), "--sparsity", "10", "--pruners", "magnitude,movment",
                  "train.max_stepz=3", "train.lr=-1", "seed=3")
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 4, res.stderr
    assert "unknown pruning method 'movment' (did you mean 'movement'?)" in res.stderr
    assert "unknown key 'train.max_stepz' (did you mean 'max_steps'?)" in res.stderr
    assert "train.lr: Input should be greater than 0" in res.stderr
    assert "override 'seed=3': the sweep sets seed itself; use --seeds" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (recipe.parent / "results").exists()


def test_plan_names_orders_and_resolves_every_combination(write_recipe):
    from movprune.experiments.sweep import plan_sweep

    recipe = write_recipe(pruner={"method": "movement", "remaining_pct": 10, "scores_lr": 0.05})
    plan = plan_sweep(recipe, remaining_pcts=[10, 3], methods=["magnitude", "movement", "none"],
                      seeds=[1, 2], overrides=["train.max_steps=5"])
    assert [r.name for r in plan] == [
        "none-r100-s1", "magnitude-r10-s1", "movement-r10-s1", "magnitude-r3-s1", "movement-r3-s1",
        "none-r100-s2", "magnitude-r10-s2", "movement-r10-s2", "magnitude-r3-s2", "movement-r3-s2"]
    sweep_dir = recipe.parent / "results" / "tiny-sst2"
    for run in plan:
        assert run.run_dir == sweep_dir / run.name
        assert run.recipe.train.max_steps == 5 and run.recipe.seed == run.seed
        assert run.recipe.pruner.method == run.method
    by_name = {r.name: r.recipe for r in plan}
    assert by_name["none-r100-s1"].pruner.remaining_pct == 100
    assert by_name["magnitude-r3-s2"].pruner.remaining_pct == 3
    # A pruner key of the file applies to the swept methods that have it, and only to them.
    assert by_name["movement-r10-s1"].pruner.scores_lr == 0.05
    assert "scores_lr" not in by_name["magnitude-r10-s1"].pruner.model_dump()
    # So does a key=value override.
    plan = plan_sweep(recipe, remaining_pcts=[10], methods=["magnitude", "movement", "soft_movement"], seeds=None,
                      overrides=["pruner.scores_lr=0.2"])
    assert [(r.name, getattr(r.recipe.pruner, "scores_lr", None)) for r in plan] == [
        ("magnitude-r10-s0", None), ("movement-r10-s0", 0.2), ("soft_movement-r10-s0", 0.2)]


def test_a_pruner_key_goes_to_the_swept_methods_that_have_it_and_is_an_error_when_none_has(write_recipe):
    """docs/reproduce.sh sweeps soft movement from the magnitude recipe with pruner.scores_init=-1.5."""
    from movprune.experiments.sweep import plan_sweep

    recipe = write_recipe(pruner={"method": "magnitude", "remaining_pct": 10})
    plan = plan_sweep(recipe, methods=["soft_movement", "magnitude"], seeds=[0],
                      overrides=["pruner.scores_init=-1.5"])
    configs = {r.method: r.recipe.pruner.model_dump() for r in plan}
    assert configs["soft_movement"]["scores_init"] == -1.5 and "scores_init" not in configs["magnitude"]
    with pytest.raises(RecipeError) as info:
        plan_sweep(recipe, methods=["magnitude", "movement"], seeds=[0],
                   overrides=["pruner.lambda_final=400", "pruner.scores_init=-1.5"])
    assert info.value.problems == [
        "pruner.lambda_final: none of the swept methods (magnitude, movement) has this key; it is a key of "
        "soft_movement, l0 (remove it or set pruner.lambda_final=null, or add one of those to --pruners)"]
    # Null says nothing (older recipe.yaml files list every key, the unused ones null).
    assert len(plan_sweep(recipe, methods=["magnitude"], seeds=[0], overrides=["pruner.lambda_final=null"])) == 1


def test_a_method_key_written_in_the_file_stays_with_the_files_method(write_recipe):
    """The shipped quickstart recipe sets soft movement's scores_init=-1.5: sweeping it with
    --pruners magnitude works, and movement keeps its own default (0.0), not soft movement's value."""
    from movprune.experiments.sweep import plan_sweep

    recipe = write_recipe(pruner={"method": "soft_movement", "remaining_pct": 10, "scores_init": -1.5})
    plan = plan_sweep(recipe, methods=["magnitude", "movement", "soft_movement"], seeds=[0])
    configs = {r.method: r.recipe.pruner.model_dump() for r in plan}
    assert "scores_init" not in configs["magnitude"]
    assert configs["movement"]["scores_init"] == 0.0
    assert configs["soft_movement"]["scores_init"] == -1.5
    assert [r.method for r in plan_sweep(recipe, methods=["magnitude"], seeds=[0])] == ["magnitude"]
    # A key the file's own method does not have is still an error (movprune run refuses it too).
    bad = write_recipe(pruner={"method": "movement", "remaining_pct": 10, "lambda_final": 5})
    with pytest.raises(RecipeError) as info:
        plan_sweep(bad, methods=["magnitude", "soft_movement"], seeds=[0])
    assert any(p.startswith("pruner.lambda_final: none of the swept methods (movement)") for p in info.value.problems)


def test_one_failing_run_does_not_stop_the_others_and_the_cli_exits_1(write_recipe):
    recipe = write_recipe(pruner={"method": "magnitude", "remaining_pct": 10})
    # A file where the first run's folder should be: that run cannot start.
    blocker = recipe.parent / "results" / "tiny-sst2" / "magnitude-r10-s0"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")
    res = run_cli("sweep", str(recipe), "--sparsity", "10,3", *FAST)
    assert res.returncode == 1, res.stderr
    assert "1 of 2 runs failed" in res.stderr
    stderr = " ".join(res.stderr.split())
    assert "magnitude-r10-s0 failed:" in stderr and "exists and is not a folder" in stderr
    assert blocker.read_text() == "in the way"  # refused, never removed
    summary = res.stdout
    assert "magnitude-r10-s0" in summary and "failed" in summary
    assert "magnitude-r3-s0" in summary and "finished" in summary
    assert (recipe.parent / "results" / "tiny-sst2" / "magnitude-r3-s0" / "result.json").is_file()
