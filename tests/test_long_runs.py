"""Long runs: checkpoints that resume exactly, pre-emption, live tracking (tiny-random-bert, the SST-2 fixture).

A run "killed" in-process raises out of the training loop from the observer, after a checkpoint and
without any clean-up, which leaves the folder as SIGKILL would; one test kills a real process with
SIGKILL, another sends SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from movprune.cli.main import app
from movprune.recipe import validate_recipe
from movprune.results import is_finished
from movprune.training import checkpoint, preemption
from movprune.training.loop import run

from conftest import KillAt as _KillAt
from conftest import Killed as _Killed
from conftest import stop_once_training, tiny_recipe_dict

# 96 samples in batches of 16: 6 batches per epoch, so 16 steps cross two epoch boundaries.
LONG = {"max_steps": 16, "max_train_samples": 96, "max_eval_samples": 32, "log_every_steps": 3,
        "eval_every_steps": 5, "save_every_steps": 4, "keep_checkpoints": 2}
METHODS = {"movement": {"method": "movement", "remaining_pct": 10},
           "soft_movement": {"method": "soft_movement", "remaining_pct": 10},
           "l0": {"method": "l0", "remaining_pct": 10},
           "sensitivity": {"method": "sensitivity", "remaining_pct": 10},
           "bias_correction": {"method": "movement", "remaining_pct": 10, "bias_correction": True}}




def _recipe_dict(out: Path, name: str, method: str, **train) -> dict:
    data = tiny_recipe_dict(out, pruner=METHODS[method], train={**LONG, **train})
    data["name"] = name
    return data


def _recipe(out: Path, name: str, method: str, **train):
    return validate_recipe(_recipe_dict(out, name, method, **train), "test")


_REFERENCES: dict[str, Path] = {}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run of a method (computed once per module)."""
    root = tmp_path_factory.mktemp("reference")

    def get(method: str) -> Path:
        if method not in _REFERENCES:
            run(_recipe(root, f"ref-{method}", method))
            _REFERENCES[method] = root / f"ref-{method}"
        return _REFERENCES[method]

    yield get
    _REFERENCES.clear()


def _curve(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("samples_per_second", None)
    return lines


def assert_same_run(a: Path, b: Path) -> None:
    """Masks identical, weights within 1e-6, metrics and the whole curve equal."""
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    assert ra["metrics"] == rb["metrics"]
    assert ra["remaining_pct"] == rb["remaining_pct"]
    assert ra["remaining_by_module"] == rb["remaining_by_module"]
    assert ra["pruner_summary"] == rb["pruner_summary"]
    wa, wb = (load_file(str(d / "model" / "model.safetensors")) for d in (a, b))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key] == 0, wb[key] == 0), f"mask of {key} differs"
        assert (wa[key].float() - wb[key].float()).abs().max().item() <= 1e-6, key
    assert _curve(a) == _curve(b)


# Movement is killed for real (SIGKILL) below, at a point that varies from run to run.
@pytest.mark.parametrize("method,kill_at,resumes_from", [
    ("soft_movement", 15, 12),   # at an epoch's end, controller running
    ("l0", 9, 8),                # mid-epoch, logging window part full; stochastic gates need the RNG
])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, reference, method, kill_at, resumes_from):
    recipe = _recipe(tmp_path, "killed", method)
    with pytest.raises(_Killed):
        run(recipe, observer=_KillAt(kill_at))
    run_dir = recipe.run_dir
    assert not is_finished(run_dir)
    kept = [step for step, _ in checkpoint.checkpoints(run_dir)]
    assert kept == [s for s in (4, 8, 12) if s <= resumes_from][-2:]  # keep_checkpoints: 2
    ckpt = checkpoint.latest(run_dir)
    for name in ("model.safetensors", "optimizer.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl",
                 "pruner_state.json", "pruner_state.safetensors", "trainer_state.json"):
        assert (ckpt / name).is_file(), name
    # Both methods run a controller, already at work when the checkpoint is taken.
    logged = [line for line in _curve(run_dir) if "lambda" in line and line["step"] <= resumes_from]
    assert any(line["lambda"] != 0 for line in logged)
    assert json.loads((ckpt / "pruner_state.json").read_text())["controller"]["scale"] is not None

    result = run(recipe, resume=True)
    assert result.steps == LONG["max_steps"]
    assert not (run_dir / "checkpoints").exists()  # a finished run keeps its model, not checkpoints
    assert_same_run(reference(method), run_dir)


@pytest.mark.parametrize("method,averages", [("sensitivity", (".sensitivity", ".uncertainty")),
                                             ("bias_correction", (".input_mean",))])
def test_a_killed_run_resumes_its_running_averages(tmp_path, reference, method, averages):
    """Sensitivity's importance and bias correction's input means are moving averages over all the
    steps so far: the checkpoint carries them (buffers of the parametrizations, in model.safetensors;
    the batch counts in the pruner's state), so the resumed run goes on as the uninterrupted one."""
    recipe = _recipe(tmp_path, "killed", method)
    with pytest.raises(_Killed):
        run(recipe, observer=_KillAt(9))
    saved = load_file(str(checkpoint.latest(recipe.run_dir) / "model.safetensors"))
    found = [key for key in saved if key.endswith(averages)]
    assert found and all(saved[key].abs().sum() > 0 for key in found)
    run(recipe, resume=True)
    assert_same_run(reference(method), recipe.run_dir)


def test_sigkill_during_a_run_then_resume_matches(tmp_path, reference):
    """A real process killed with SIGKILL (possibly while writing a checkpoint) resumes exactly."""
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_recipe_dict(tmp_path / "results", "sigkill", "movement",
                                                save_every_steps=2)))
    run_dir = tmp_path / "results" / "sigkill"
    proc = subprocess.Popen([sys.executable, "-m", "movprune", "run", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and checkpoint.latest(run_dir) is None and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not is_finished(run_dir), "the run finished before it could be killed"
    assert checkpoint.latest(run_dir) is not None
    # save_every_steps=2 is not the reference's 4, and may differ on resume: it changes no number.
    out = CliRunner().invoke(app, ["run", str(path), "--resume", "train.save_every_steps=4"])
    assert out.exit_code == 0, out.output
    assert_same_run(reference("movement"), run_dir)


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path):
    """No save_every_steps: SIGTERM still leaves a checkpoint to resume from, and says how."""
    path = tmp_path / "recipe.yaml"
    data = tiny_recipe_dict(tmp_path / "results", train={"max_steps": 100000, "log_every_steps": 1})
    path.write_text(yaml.safe_dump(data))
    run_dir = tmp_path / "results" / data["name"]
    proc = subprocess.Popen([sys.executable, "-m", "movprune", "run", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "300"})
    stderr = stop_once_training(proc, run_dir)
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    assert f"resume with: movprune run {path} --resume" in stderr
    ckpt = checkpoint.latest(run_dir)
    assert ckpt is not None and not is_finished(run_dir)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    last_logged = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert state["step"] == last_logged  # saved at the step boundary the signal reached


class _Processes:
    """An accelerator of ``n`` processes; the others report ``remote`` as their stop flag."""

    device = "cpu"

    def __init__(self, n: int = 2, remote: int = 0):
        self.num_processes, self.remote, self.reductions = n, remote, 0

    def reduce(self, tensor, reduction):
        assert reduction == "max"
        self.reductions += 1
        return torch.maximum(tensor, torch.tensor([self.remote]))


def test_the_stop_flag_is_combined_across_processes_only_where_asked():
    signalled = preemption.StopSignals()
    signalled.signum = signal.SIGTERM
    one = _Processes(n=1)
    assert signalled.requested() and signalled.requested(one, collective=False)  # its own flag, every step
    assert one.reductions == 0
    two = _Processes()
    assert not signalled.requested(two, collective=False)  # the other process does not know yet
    assert two.reductions == 0
    assert signalled.requested(two) and two.reductions == 1
    # The process that got no signal learns of the other's at the same step, and stops as it would.
    unaware, two = preemption.StopSignals(), _Processes(remote=signal.SIGTERM)
    assert not unaware.requested(two, collective=False) and unaware.signum is None
    assert unaware.requested(two) and (unaware.name, unaware.exit_code) == ("SIGTERM", 143)
    assert not preemption.StopSignals().requested(_Processes())


def test_the_loop_reads_the_stop_flag_back_only_on_logging_and_checkpoint_steps(tmp_path, monkeypatch):
    asked: list[bool] = []
    requested = preemption.StopSignals.requested

    def spy(self, accelerator=None, *, collective=True):
        asked.append(collective)
        return requested(self, accelerator, collective=collective)

    monkeypatch.setattr(preemption.StopSignals, "requested", spy)
    run(_recipe(tmp_path, "sync", "movement", max_steps=8, eval_every_steps=None))  # logs every 3, saves every 4
    assert len(asked) == 8  # once per step
    assert [done for done, collective in enumerate(asked, 1) if collective] == [3, 4, 6, 8]


def test_resume_with_a_changed_recipe_is_refused(tmp_path):
    recipe = _recipe(tmp_path / "results", "changed", "movement", max_steps=6, save_every_steps=2,
                     eval_every_steps=None)
    with pytest.raises(_Killed):
        run(recipe, observer=_KillAt(3))
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_recipe_dict(tmp_path / "results", "changed", "movement", max_steps=6,
                                                save_every_steps=2, eval_every_steps=None)))
    before = sorted(p.name for p in (recipe.run_dir / "checkpoints").iterdir())
    out = CliRunner().invoke(app, ["run", str(path), "--resume", "train.lr=0.002"])
    assert out.exit_code == 2
    assert "train.lr" in out.output and "Traceback" not in out.output
    assert sorted(p.name for p in (recipe.run_dir / "checkpoints").iterdir()) == before  # untouched
    # The same recipe resumes; a finished run resumed again is left as it is.
    assert CliRunner().invoke(app, ["run", str(path), "--resume"]).exit_code == 0
    finished = (recipe.run_dir / "result.json").read_bytes()
    assert CliRunner().invoke(app, ["run", str(path), "--resume"]).exit_code == 0
    assert (recipe.run_dir / "result.json").read_bytes() == finished


def test_tensorboard_holds_loss_and_remaining_at_logged_steps(tmp_path):
    """Events are read back; a resumed run replaces the steps the killed one logged after its
    checkpoint instead of duplicating them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = _recipe(tmp_path, "tb", "movement", max_steps=9, save_every_steps=4, eval_every_steps=None,
                     report_to=["tensorboard"])
    with pytest.raises(_Killed):
        run(recipe, observer=_KillAt(6))
    run(recipe, resume=True)
    events = EventAccumulator(str(recipe.run_dir / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    curve = _curve(recipe.run_dir)
    for tag, key in (("train/loss", "loss"), ("train/remaining_pct", "remaining_pct"), ("train/lr", "lr")):
        assert tag in scalars
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        expected = [(line["step"], line[key]) for line in curve if key in line and "eval" not in line]
        assert [s for s, _ in logged] == [3, 6, 9]
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
    accuracy = events.Scalars("eval/accuracy")
    assert [e.step for e in accuracy] == [9]
    assert accuracy[0].value == pytest.approx(json.loads((recipe.run_dir / "result.json").read_text())
                                              ["metrics"]["accuracy"])


def test_partial_checkpoint_is_never_the_newest(tmp_path):
    (tmp_path / "checkpoints" / "step-4").mkdir(parents=True)
    (tmp_path / "checkpoints" / ".step-8.partial").mkdir()
    (tmp_path / "checkpoints" / "step-notes").mkdir()
    assert checkpoint.latest(tmp_path).name == "step-4"
    checkpoint.remove_partial(tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-4", "step-notes"]


def test_sweep_resumes_an_unfinished_run_from_its_checkpoint(tmp_path):
    from movprune.experiments import sweep

    path = tmp_path / "sweep.yaml"
    data = _recipe_dict(tmp_path / "results", "sw", "movement", max_steps=8, eval_every_steps=None)
    path.write_text(yaml.safe_dump(data))
    plan = sweep.plan_sweep(path)
    phases: list[str] = []

    class Observer:
        def __init__(self, kill_at: int):
            self.kill_at = kill_at

        def on_run_start(self, index, total, run):
            killer = _KillAt(self.kill_at)
            killer.on_phase = phases.append
            return killer

        def on_run_end(self, index, total, outcome):
            pass

    with pytest.raises(_Killed):
        sweep.run_sweep(plan, observer=Observer(kill_at=6))
    assert checkpoint.latest(plan[0].run_dir).name == "step-4"
    outcomes = sweep.run_sweep(plan, observer=Observer(kill_at=-1))
    assert [o.status for o in outcomes] == ["finished"]
    assert any(p.startswith("resuming from") and p.endswith("step-4") for p in phases)
