"""`movprune sweep --backend ray` and `--jobs N`: the local backend's resume, skip and failure rules."""

from __future__ import annotations

import os

import pytest
import ray
from test_sweep import FAST, check_finished_runs, finished_runs, snapshot
from typer.testing import CliRunner

from movprune.cli.main import app

from conftest import REPO


@pytest.fixture(scope="module")
def local_ray():
    """A small local Ray instance (2 CPUs, 80 MB object store, no dashboard) the sweeps connect to."""
    old = os.environ.get("PYTHONPATH")
    # Ray's workers are started with this environment: they must import this checkout's movprune.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), old) if p)
    ray.init(num_cpus=2, object_store_memory=80 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def sweep(recipe, *options: str):
    return CliRunner().invoke(app, ["sweep", str(recipe), "--pruners", "magnitude,movement",
                                    "--sparsity", "10,3", *options, *FAST], env={"COLUMNS": "200"})


def test_a_2x2_sweep_on_ray_isolates_a_failure_resumes_and_skips_finished_runs(write_recipe, local_ray):
    recipe = write_recipe()
    sweep_dir = recipe.parent / "results" / "tiny-sst2"
    # A file where one run's folder should be: that run fails, the three others finish.
    blocker = sweep_dir / "movement-r3-s0"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")
    res = sweep(recipe, "--backend", "ray")
    assert res.exit_code == 1, res.output
    assert "1 of 4 runs failed" in res.output
    output = " ".join(res.output.split())
    assert "movement-r3-s0 failed:" in output and "exists and is not a folder" in output
    assert blocker.read_text() == "in the way"  # refused, never removed
    assert finished_runs(sweep_dir) == {"magnitude-r10-s0", "movement-r10-s0", "magnitude-r3-s0"}

    # The failed run alone is redone (here by a local worker process: same folder, same rules).
    blocker.unlink()
    res = sweep(recipe, "--jobs", "2")
    assert res.exit_code == 0, res.output
    assert "1 to run, 3 finished earlier" in res.output
    assert len(finished_runs(sweep_dir)) == 4
    check_finished_runs(sweep_dir)

    # Everything finished: a rerun on Ray dispatches nothing and touches nothing.
    before = snapshot(sweep_dir)
    res = sweep(recipe, "--backend", "ray")
    assert res.exit_code == 0, res.output
    assert "0 to run, 4 finished earlier" in res.output
    assert snapshot(sweep_dir) == before


def test_backend_options_are_checked_before_anything_runs(write_recipe):
    recipe = write_recipe()
    res = sweep(recipe, "--ray-address", "auto")
    assert res.exit_code == 2 and "go with --backend ray" in res.output
    res = sweep(recipe, "--backend", "ray", "--jobs", "2")
    assert res.exit_code == 2 and "--jobs is for the local backend" in res.output
    res = sweep(recipe, "--backend", "slurm")
    assert res.exit_code == 2 and "choose 'local' or 'ray'" in res.output
    assert not (recipe.parent / "results").exists()
