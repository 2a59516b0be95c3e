"""The pruner interface's one-shot path: ``train.max_steps: 0`` prunes, evaluates, bakes and
publishes with no training step; a pruner may ask for calibration batches before training; the
schedule is the pruner's strategy; methods that learn their mask refuse a zero budget."""

from __future__ import annotations

import json

import pytest
import torch

from movprune import pruners
from movprune.pruners.base import Pruner
from movprune.pruners.counting import prunable_linears
from movprune.pruners.magnitude import MagnitudePruner
from movprune.pruners.schedule import CubicSchedule, OneShotSchedule, cubic_schedule

from conftest import run_cli


def test_magnitude_with_no_steps_is_one_shot_magnitude_pruning(write_recipe, tmp_path):
    recipe = write_recipe(pruner={"method": "magnitude", "remaining_pct": 25}, train={"max_steps": 0})
    out = run_cli("run", str(recipe))
    assert out.returncode == 0, out.stderr
    run_dir = tmp_path / "results" / "tiny-sst2"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["steps"] == 0
    assert result["remaining_pct"] == pytest.approx(25.0, abs=0.1)
    assert "accuracy" in result["metrics"]
    # no training record, only the final evaluation
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("final") for r in records] == [True]
    assert run_cli("inspect", str(run_dir)).returncode == 0
    exported = run_cli("export", str(run_dir), "--to", str(tmp_path / "exp"), "--format", "dense")
    assert exported.returncode == 0, exported.stderr


@pytest.mark.parametrize("method", ["movement", "soft_movement", "l0", "sensitivity"])
def test_methods_that_learn_their_mask_refuse_zero_steps(write_recipe, method):
    recipe = write_recipe(pruner={"method": method, "remaining_pct": 10}, train={"max_steps": 0})
    out = run_cli("run", str(recipe), "--dry-run")
    assert out.returncode == 2
    assert "train.max_steps: 0 trains nothing" in out.stderr and method in out.stderr
    assert "Traceback" not in out.stderr


def test_schedules():
    cubic = CubicSchedule(100, 0.1, 0.1, 0.2)
    assert [cubic.fraction(t) for t in (0, 45, 80, 100)] == [
        cubic_schedule(t, 100, 1.0, 0.1, 0.1, 0.2) for t in (0, 45, 80, 100)]
    assert cubic.fraction(0) == 1.0 and cubic.fraction(100) == pytest.approx(0.1)
    shot = OneShotSchedule(0.3)
    assert shot.fraction(0) == shot.fraction(10**6) == 0.3


class _Calibrated(MagnitudePruner):
    """Records what the loop hands :meth:`calibrate`, and holds the mask from the first step."""

    seen: list = []

    def calibration_samples(self) -> int:
        return 40

    def make_schedule(self):
        return OneShotSchedule(self.config.remaining_pct / 100)

    def calibrate(self, model, batches):
        type(self).seen.append(([{k: v.clone() for k, v in b.items()} for b in batches], model.training,
                                sorted(self.layers) == sorted(prunable_linears(model))))


def test_the_loop_calibrates_before_training_on_seeded_batches(write_recipe, monkeypatch):
    monkeypatch.setattr(pruners, "pruner_class", lambda method: _Calibrated)
    _Calibrated.seen = []
    for name in ("a", "b"):
        out = run_cli("run", str(write_recipe(pruner={"method": "magnitude", "remaining_pct": 50},
                                              train={"max_steps": 2, "batch_size": 16}, name=name)))
        assert out.returncode == 0, out.stderr
    (first, training, attached), (second, _, _) = _Calibrated.seen
    assert attached and training
    assert [len(b["input_ids"]) for b in first] == [16, 16, 8] and all("labels" in b for b in first)
    for x, y in zip(first, second):  # the same examples on a rerun with the same seed
        assert torch.equal(x["input_ids"], y["input_ids"])


def test_calibration_is_off_by_default():
    assert Pruner.calibration_samples(object.__new__(Pruner)) == 0
