"""Results that finished but deserve suspicion carry ``warnings`` in result.json, shown by ``run``,
``sweep`` and ``compare``: a mask set mostly by the final calibration step, and a model that
predicts one class for a whole evaluation set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from movprune.cli.main import app
from movprune.training.guards import (
    CALIBRATION_RELATIVE_TOLERANCE,
    COLLAPSE_REMEDIES,
    calibration_warning,
    collapse_warnings,
    result_warnings,
)

from conftest import tiny_recipe_dict


@pytest.mark.parametrize("target, before, flagged", [
    (10, 100.0, True),   # soft movement on a short budget: training never left 100%
    (10, 15.0, False),   # exactly at the tolerance (|15 - 10| = 0.5 x 10)
    (10, 15.01, True),
    (10, 5.0, False),
    (10, 4.99, True),    # overshoot counts as well: calibration added weights back
    (3, 3.2, False),
    (None, 100.0, False),  # no target (fixed lambda): nothing was calibrated
])
def test_calibration_warning_beyond_the_relative_tolerance(target, before, flagged):
    assert CALIBRATION_RELATIVE_TOLERANCE == 0.5
    warning = calibration_warning(target, {"remaining_pct_before_calibration": before})
    assert (warning is not None) == flagged
    if flagged:
        assert warning["code"] == "mask_from_calibration"
        expected = f"at {before:.1f}% remaining before the final calibration step set it to the {target:g}%"
        assert expected in warning["message"]


def test_no_calibration_no_warning():
    assert calibration_warning(10, {}) is None  # magnitude / movement: no calibration step


def test_collapse_warning_when_one_class_takes_every_prediction():
    (warning,) = collapse_warnings({"validation": {"0": 0, "1": 64}, "validation_mm": {"0": 3, "1": 61}})
    assert warning["code"] == "single_class_predictions"
    assert "predicts class 1 for all 64 examples of validation" in warning["message"]
    assert COLLAPSE_REMEDIES in warning["message"]
    assert collapse_warnings({"validation": {"0": 1}}) == []  # a single example proves nothing
    both = result_warnings(10, {"remaining_pct_before_calibration": 100.0}, {"validation": {"0": 9, "1": 0}})
    assert [w["code"] for w in both] == ["mask_from_calibration", "single_class_predictions"]


def test_glue_tasks_report_their_prediction_histogram():
    from movprune.tasks import get_task

    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.0, 1.0, 0.5]])
    assert get_task("mnli").prediction_counts(logits) == {"0": 1, "1": 2, "2": 0}
    assert get_task("stsb").prediction_counts(np.array([[0.3], [4.1]])) is None  # regression: no classes


def test_warnings_reach_result_json_run_sweep_and_compare(tmp_path):
    """One tiny soft-movement run (6 steps cannot move the mask from 100% towards 10%): ``run``
    writes and prints the warning, ``sweep`` (finding it finished) marks and prints it, ``compare``
    marks its cell and lists it under the table."""
    recipe = tiny_recipe_dict(tmp_path / "results", name="sw",
                              pruner={"method": "soft_movement", "remaining_pct": 10},
                              train={"max_steps": 6, "log_every_steps": 3})
    path = tmp_path / "sw.yaml"
    path.write_text(yaml.safe_dump(recipe))
    runner = CliRunner()
    # Where the sweep below puts its one run, so that it finds it finished.
    res = runner.invoke(app, ["run", str(path), f"output_dir={tmp_path / 'results' / 'sw'}",
                              "name=soft_movement-r10-s0"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    run_dir = tmp_path / "results" / "sw" / "soft_movement-r10-s0"
    result = json.loads((run_dir / "result.json").read_text())

    before = result["pruner_summary"]["remaining_pct_before_calibration"]
    assert abs(before - 10) > CALIBRATION_RELATIVE_TOLERANCE * 10
    codes = [w["code"] for w in result["warnings"]]
    assert "mask_from_calibration" in codes
    (counts,) = result["prediction_counts"].values()
    assert sum(counts.values()) == 64 and set(counts) == {"0", "1"}
    collapsed = sum(n > 0 for n in counts.values()) == 1
    assert ("single_class_predictions" in codes) == collapsed
    assert f"warning ⚠: soft_movement-r10-s0: the mask was at {before:.1f}% remaining" in res.output

    res = runner.invoke(app, ["sweep", str(path)], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "finished earlier, skipped" in res.output
    summary_row = next(line for line in res.stdout.splitlines() if "soft_movement-r10-s0" in line)
    assert "⚠" in summary_row
    assert "warning ⚠: soft_movement-r10-s0: the mask was at" in res.output

    res = runner.invoke(app, ["compare", str(tmp_path / "results"), "--format", "markdown"])
    assert res.exit_code == 0, res.output
    accuracy = result["metrics"]["accuracy"]
    assert f"| {accuracy:.1f} ⚠ |" in res.stdout
    assert f"- ⚠ soft_movement at 10% remaining (90% sparse): {run_dir}: the mask was at" in res.stdout
