"""``movprune compare --plot-speed``: accuracy against measured speed-up, from the JSON of
benchmarks/sweep_speed.py (one point per level, mean over seeds, per runtime)."""

from __future__ import annotations

import json

import pytest

from movprune.errors import RunFailedError
from movprune.experiments.compare.speed_plot import load_speed, plot_speed, speed_points


def _entry(run_dir, pruner, method, pct, acc, b1, b32, onnx_b1=1.0, onnx_b32=1.0):
    best = {"pytorch": {"batch_1": {"format": "compact", "speedup_vs_dense": b1},
                        "batch_32": {"format": "compact", "speedup_vs_dense": b32}},
            "onnx": {"batch_1": {"format": "onnx", "speedup_vs_dense": onnx_b1},
                     "batch_32": {"format": "onnx", "speedup_vs_dense": onnx_b32}}}
    return {"run_dir": run_dir, "pruner": pruner, "method": method, "remaining_pct": pct, "metric": "accuracy",
            "metric_value": acc, "best": best}


SPEED = {"inputs": {"seq_length": 128}, "timing": {"threads": 1}, "runs": {
    "a": _entry("/r/dense", "none", "none", 100.0, 0.90, 1.0, 1.0),
    "b": _entry("/r/h25-s0", "movement-hybrid", "movement", 25.0, 0.86, 2.0, 3.0, 2.5, 3.5),
    "c": _entry("/r/h25-s1", "movement-hybrid", "movement", 25.0, 0.88, 2.2, 3.2, 2.7, 3.7),
    "d": _entry("/r/h10-s0", "movement-hybrid", "movement", 10.0, 0.80, 4.0, 5.0),
    "e": _entry("/r/u10-s0", "movement", "movement", 10.0, 0.84, 1.5, 1.1),
}}


def test_speed_points_average_seeds_per_level_and_keep_runtimes_apart():
    points = speed_points(SPEED)
    hybrid = points[1][("movement-hybrid", "pytorch")]
    assert [round(p[0], 6) for p in hybrid] == [2.1, 4.0]  # sorted by speed-up; seeds averaged
    assert hybrid[0][1] == pytest.approx(0.87) and hybrid[0][2] == 25.0
    assert {p[2]: p[0] for p in points[32][("movement-hybrid", "onnx")]}[25.0] == pytest.approx(3.6)
    assert points[1][("none", "pytorch")] == [(1.0, 0.90, 100.0)]
    only = speed_points(SPEED, ["/r/dense", "/r/u10-s0"])
    assert set(only[1]) == {("none", "pytorch"), ("none", "onnx"), ("movement", "pytorch"), ("movement", "onnx")}


def test_plot_speed_writes_the_figure_and_rejects_other_json(tmp_path):
    path = plot_speed(SPEED, tmp_path / "speed.png")
    assert path.stat().st_size > 10_000
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"formats": {}}))
    with pytest.raises(RunFailedError, match="sweep_speed"):
        load_speed(bad)
