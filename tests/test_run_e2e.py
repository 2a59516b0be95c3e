"""`movprune run` end to end on tiny-random-bert with the SST-2 and MRPC fixtures (tests/fixtures/glue)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from movprune.results import is_finished

from conftest import FINISHED_RUN_PRUNER, run_cli, tiny_recipe_dict

PLAIN_LOAD = """
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
path = sys.argv[1]
model = AutoModelForSequenceClassification.from_pretrained(path)
tok = AutoTokenizer.from_pretrained(path)
assert not any("movprune" in m for m in sys.modules), "movprune was imported"
lin = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder." in n]
kept = sum(int(torch.count_nonzero(m.weight)) for m in lin)
total = sum(m.weight.numel() for m in lin)
model.eval()
with torch.no_grad():
    logits = model(**tok(["a gorgeous film", "a dull mess"], return_tensors="pt", padding=True)).logits
print(json.dumps({"remaining_pct": 100 * kept / total, "shape": list(logits.shape)}))
"""


def check_run_folder(run_dir: Path, task: str, method: str, pct: float) -> dict:
    """The folder holds the resolved recipe, the curve, the result and the model; returns the result."""
    assert {p.name for p in run_dir.iterdir()} >= {"recipe.yaml", "metrics.jsonl", "result.json", "model"}
    result = json.loads((run_dir / "result.json").read_text())
    for key in ("task", "model", "pruner", "target_remaining_pct", "remaining_pct", "metrics", "seed",
                "steps", "train_seconds", "versions", "remaining_by_module"):
        assert key in result
    assert result["task"] == task and result["pruner"] == method and result["steps"] == 12
    assert result["target_remaining_pct"] == pct
    assert abs(result["remaining_pct"] - pct) <= 0.5
    expected_metrics = {"sst2": {"accuracy"}, "mrpc": {"accuracy", "f1"}}[task]
    assert set(result["metrics"]) == expected_metrics
    assert all(0 <= v <= 100 for v in result["metrics"].values())
    assert len(result["remaining_by_module"]) == 12

    curve = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in curve if "loss" in r]
    assert steps == [4, 8, 12]
    assert curve[-1].get("final") and curve[-1]["eval"] == result["metrics"]

    # The resolved recipe reloads to the same run.
    from movprune.recipe import load_recipe

    assert load_recipe(run_dir / "recipe.yaml").pruner.method == method
    assert (run_dir / "model" / "model.safetensors").is_file()
    return result


def test_shared_run_folder_is_complete_and_its_model_loads_without_movprune(finished_run):
    result = check_run_folder(finished_run, "sst2", "movement", 10)
    # The saved model is an ordinary transformers model: loads without movprune, masks baked in.
    plain = subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(finished_run / "model")],
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr
    loaded = json.loads(plain.stdout)
    assert loaded["remaining_pct"] == pytest.approx(result["remaining_pct"])
    assert loaded["shape"] == [2, 2]


def test_cli_run_on_mrpc_writes_a_complete_folder_and_prints_its_summary(write_recipe):
    path = write_recipe(task="mrpc", pruner={"method": "magnitude", "remaining_pct": 30})
    proc = run_cli("run", str(path))
    assert proc.returncode == 0, proc.stderr
    recipe = yaml.safe_load(path.read_text())
    result = check_run_folder(Path(recipe["output_dir"]) / recipe["name"], "mrpc", "magnitude", 30)
    summary = proc.stdout  # the summary table: the run's name, its measured remaining % and metrics
    assert result["name"] in summary and f"{result['remaining_pct']:.2f}" in summary
    assert f"{result['metrics']['f1']:.2f}" in summary


def test_finished_run_is_not_overwritten_without_force(finished_run_copy, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(finished_run_copy.parent, pruner=FINISHED_RUN_PRUNER,
                                                    train={"max_steps": 4})))
    result = finished_run_copy / "result.json"
    before = result.read_bytes()
    proc = run_cli("run", str(path))
    assert proc.returncode == 2
    assert "--force" in proc.stderr and "Traceback" not in proc.stderr
    assert result.read_bytes() == before
    assert run_cli("run", str(path), "--force", "seed=1").returncode == 0
    assert json.loads(result.read_text())["seed"] == 1


def test_interrupted_run_leaves_no_result(write_recipe, tmp_path):
    """Kill a run mid-training: the folder must not look finished, and a rerun completes it."""
    import os
    import signal
    import time

    path = write_recipe(train={"max_steps": 100000, "log_every_steps": 1})
    recipe = yaml.safe_load(path.read_text())
    run_dir = Path(recipe["output_dir"]) / recipe["name"]
    proc = subprocess.Popen([sys.executable, "-m", "movprune", "run", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ},
                            # A shell's background job inherits SIGINT ignored; a user's terminal
                            # does not. Give the child the terminal's default.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and not (run_dir / "metrics.jsonl").exists():
        time.sleep(0.5)
    assert (run_dir / "metrics.jsonl").exists(), "training never started"
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the run ignored Ctrl-C for 180 s: {proc.stderr.read().decode()[-2000:]}")
    stderr = proc.stderr.read().decode()
    assert proc.returncode == 130, stderr[-2000:]  # the shell's code for Ctrl-C: 128 + SIGINT
    assert not (run_dir / "result.json").exists()
    assert not is_finished(run_dir)
    assert "Traceback" not in stderr
    # A rerun does not need --force: an unfinished folder holds no results.
    assert run_cli("run", str(path), "train.max_steps=4").returncode == 0
    assert is_finished(run_dir)
