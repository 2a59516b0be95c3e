"""`movprune sweep --grid KEY=V1,V2`: any recipe key as an axis, named runs, resume, and compare's layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from movprune.errors import RecipeError
from movprune.experiments import sweep

from conftest import run_cli

FAST = ["train.batch_size=8", "train.max_train_samples=32", "train.max_eval_samples=24"]
GRID = ["--grid", "train.lr=0.001,0.0001", "--grid", "train.max_steps=2,3"]
NAMES = {"movement-r10-s0-lr0.001-max_steps2", "movement-r10-s0-lr0.001-max_steps3",
         "movement-r10-s0-lr0.0001-max_steps2", "movement-r10-s0-lr0.0001-max_steps3"}


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory) -> Path:
    """The 2 x 2 grid over train.lr and train.max_steps, run once through the CLI, then again."""
    from conftest import tiny_recipe_dict

    tmp = tmp_path_factory.mktemp("grid")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tmp / "results")))
    res = run_cli("sweep", str(recipe), "--sparsity", "10", *GRID, *FAST)
    assert res.returncode == 0, res.stderr
    sweep_dir = tmp / "results" / "tiny-sst2"
    rerun = run_cli("sweep", str(recipe), "--sparsity", "10", *GRID, *FAST)
    return sweep_dir, recipe, res, rerun


def test_a_two_by_two_grid_gives_four_runs_named_by_their_values(grid_sweep):
    sweep_dir, _, res, _ = grid_sweep
    assert {p.parent.name for p in sweep_dir.glob("*/result.json")} == NAMES
    for name in NAMES:
        result = json.loads((sweep_dir / name / "result.json").read_text())
        recipe = yaml.safe_load((sweep_dir / name / "recipe.yaml").read_text())
        lr = 0.001 if "lr0.001-" in name else 0.0001
        steps = int(name[-1])
        assert recipe["train"]["lr"] == lr and recipe["train"]["max_steps"] == steps
        assert result["steps"] == steps
    assert "4 runs" in res.stderr and "4 to run" in res.stderr


def test_rerunning_the_grid_skips_all_four_runs_untouched(grid_sweep):
    sweep_dir, recipe, _, rerun = grid_sweep
    assert rerun.returncode == 0, rerun.stderr
    assert "0 to run, 4 finished earlier" in rerun.stderr
    before = snapshot(sweep_dir)
    again = run_cli("sweep", str(recipe), "--sparsity", "10", *GRID, *FAST, "--dry-run")
    assert again.returncode == 0 and again.stdout.count("finished: skipped") == 4
    assert snapshot(sweep_dir) == before


def _accuracy(sweep_dir: Path, name: str) -> float:
    return json.loads((sweep_dir / name / "result.json").read_text())["metrics"]["accuracy"]


def test_compare_lays_the_grid_out_as_the_rows_and_columns_asked(grid_sweep):
    sweep_dir = grid_sweep[0]
    res = run_cli("compare", str(sweep_dir), "--rows", "train.max_steps", "--columns", "train.lr",
                  "--format", "json")
    assert res.returncode == 0, res.stderr
    (table,) = json.loads(res.stdout)
    assert (table["row_axis"], table["column_axis"]) == ("train.max_steps", "train.lr")
    assert table["pruners"] == ["movement [train.lr=0.0001]", "movement [train.lr=0.001]"]
    assert [row["value"] for row in table["rows"]] == [2, 3]
    for row in table["rows"]:
        for lr in ("0.0001", "0.001"):
            cell = row["cells"][f"movement [train.lr={lr}]"]
            name = f"movement-r10-s0-lr{lr}-max_steps{row['value']}"
            assert cell["run_dirs"] == [str(sweep_dir / name)]
            assert cell["metrics"]["accuracy"] == {"mean": _accuracy(sweep_dir, name), "std": None, "n": 1}
    # The other way round, in Markdown: rows are the learning rates, a column per budget.
    res = run_cli("compare", str(sweep_dir), "--rows", "train.lr", "--columns", "train.max_steps",
                  "--format", "markdown")
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith("|")]
    assert lines[0] == "| train.lr | movement [train.max_steps=2] | movement [train.max_steps=3] |"
    assert lines[2].startswith("| 0.0001 | ") and lines[3].startswith("| 0.001 | ")
    for line, lr in ((lines[2], "0.0001"), (lines[3], "0.001")):
        cells = [c.strip().strip("*").removesuffix(" ⚠") for c in line.strip("|").split("|")][1:]
        assert cells == [f"{_accuracy(sweep_dir, f'movement-r10-s0-lr{lr}-max_steps{s}'):.1f}" for s in (2, 3)]
    # Nothing differs that the layout does not show: no warning.
    assert "warning" not in res.stderr


def test_the_plot_takes_a_grid_key_as_its_x(grid_sweep, tmp_path, monkeypatch):
    import matplotlib.image

    from movprune.experiments import compare

    drawn = []
    original = compare.plot
    monkeypatch.setattr(compare, "plot", lambda comps, path, **kw: drawn.append(comps) or original(comps, path, **kw))
    out = tmp_path / "budget.png"
    res = run_cli("compare", str(grid_sweep[0]), "--columns", "train.lr", "--plot", str(out),
                  "--x", "train.max_steps")
    assert res.returncode == 0, res.stderr
    assert matplotlib.image.imread(out).shape[0] > 100
    (comparison,) = drawn[0]  # the table's rows are levels; the plot's x is the budget
    assert comparison.row_axis == "train.max_steps" and [r.value for r in comparison.rows] == [2, 3]
    assert {c.axes for c in comparison.columns} == {(("train.lr", 0.0001),), (("train.lr", 0.001),)}


@pytest.mark.parametrize("args, why", [
    (["--x", "train.max_steps"], "give --plot FILE.png"),
    (["--x", "train.max_steps", "--figure", "layers", "--plot", "f.png"], "leave out --figure"),
    (["--figure", "layers", "--plot", "f.png", "--rows", "train.max_steps"], "a figure's panels are"),
    (["--rows", "train"], "a section of the recipe, not one key"),
])
def test_compare_refuses_options_it_would_ignore(grid_sweep, tmp_path, args, why):
    res = run_cli("compare", str(grid_sweep[0]), *args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and why in errors[0], res.stderr
    assert not (tmp_path / "f.png").exists()


@pytest.mark.parametrize("axis, why", [("train.save_every_steps=5,10", "operational key"),
                                       ("output_dir=a,b", "output key"), ("train.lrr=1,2", "unknown recipe key"),
                                       ("seed=1,2", "use --seeds")])
def test_an_unsweepable_key_is_refused_with_one_line_and_exit_2(write_recipe, axis, why):
    res = run_cli("sweep", str(write_recipe()), "--grid", axis, "--dry-run")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --grid: ") and why in lines[0], res.stderr
    assert axis.split("=")[0] in lines[0] and "Traceback" not in res.stderr


def test_compare_refuses_an_axis_that_is_not_a_setting(grid_sweep):
    res = run_cli("compare", str(grid_sweep[0]), "--rows", "train.log_every_steps")
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert "--rows train.log_every_steps" in line and "operational" in line


def test_grid_values_split_on_commas_outside_brackets_and_read_like_overrides():
    assert sweep.split_grid_values("[32,32],[64, 64]") == ["[32,32]", "[64, 64]"]
    assert sweep.split_grid_values("'a,b',c") == ["'a,b'", "c"]
    (axis,) = sweep.parse_grid(["pruner.block_shape=[32,32],[64,64]"])
    assert axis == ("pruner.block_shape", [[32, 32], [64, 64]])
    assert sweep.parse_grid(["train.bf16=true,false"]) == [("train.bf16", [True, False])]
    with pytest.raises(RecipeError, match="given twice"):
        sweep.parse_grid(["train.lr=1,2", "train.lr=3"])


def test_run_names_keep_the_existing_axes_and_append_the_grid():
    assert sweep.run_name("movement", 10.0, 1) == "movement-r10-s1"  # earlier sweeps still resume
    assert sweep.run_name("movement", 10.0, 42, [("train.max_steps", 300), ("pruner.pattern", "hybrid")]) == \
        "movement-r10-s42-max_steps300-patternhybrid"
    assert sweep.run_name("magnitude", 3.0, 1, [("pruner.block_shape", [32, 32]), ("train.lr", 3e-05)]) == \
        "magnitude-r3-s1-block_shape32x32-lr3e-05"
    # Two keys with the same last part are written in full.
    assert sweep.run_name("l0", None, 1, [("pruner.scores_lr", 0.1), ("dataset.scores_lr", 1)]) == \
        "l0-s1-pruner_scores_lr0.1-dataset_scores_lr1"


def test_a_grid_pruner_key_must_be_a_key_of_every_swept_method(write_recipe):
    with pytest.raises(RecipeError, match="magnitude have no key scores_lr"):
        sweep.plan_sweep(write_recipe(), remaining_pcts=[10], methods=["magnitude", "movement"],
                         grid=[("pruner.scores_lr", [0.01, 0.1])])
    with pytest.raises(RecipeError, match="also a --grid axis"):
        sweep.plan_sweep(write_recipe(), remaining_pcts=[10], overrides=["train.lr=0.1"],
                         grid=[("train.lr", [0.01, 0.1])])
    # dense fine-tuning reads no pruner key: a grid over a shared one would repeat one dense run
    with pytest.raises(RecipeError, match="none have no key initial_warmup"):
        sweep.plan_sweep(write_recipe(), remaining_pcts=[10], methods=["none", "movement"],
                         grid=[("pruner.initial_warmup", [0.1, 0.2])])
