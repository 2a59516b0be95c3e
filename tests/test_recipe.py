"""Recipes: schema, overrides, and one clear error (exit code 2, no traceback) for bad input."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import yaml

from movprune.errors import RecipeError
from movprune.recipe import load_recipe

from conftest import REPO, run_cli, tiny_recipe_dict


def test_overrides_are_typed_and_nested(write_recipe):
    path = write_recipe()
    recipe = load_recipe(path, ["train.max_steps=20", "pruner.remaining_pct=3", "train.bf16=true",
                                "pruner.method=magnitude", "data_dir=null"])
    assert recipe.train.max_steps == 20
    assert recipe.pruner.remaining_pct == 3.0
    assert recipe.train.bf16 is True
    assert recipe.pruner.method == "magnitude"
    assert recipe.data_dir is None


def test_each_method_has_its_own_keys_at_their_real_defaults(write_recipe):
    recipe = load_recipe(write_recipe(), ["pruner.method=movement"])
    assert (recipe.pruner.scores_lr, recipe.pruner.scores_init, recipe.pruner.scores_init_from) == (1e-2, 0.0,
                                                                                                    "constant")
    recipe = load_recipe(write_recipe(), ["pruner.method=l0"])
    assert (recipe.pruner.scores_lr, recipe.pruner.scores_init) == (1e-1, math.log(0.9 / 0.1))
    assert recipe.pruner.lambda_final is None  # target mode: the controller sets lambda
    recipe = load_recipe(write_recipe(), ["pruner.method=magnitude"])
    assert not hasattr(recipe.pruner, "scores_lr")  # magnitude has no scores
    # null is "the method's default", as in recipes written before the per-method configs
    assert load_recipe(write_recipe(), ["pruner.scores_lr=null"]).pruner.scores_lr == 1e-2


@pytest.mark.parametrize("overrides, key, method, takers", [
    (["pruner.method=magnitude", "pruner.scores_lr=0.5"], "scores_lr", "magnitude", "movement, soft_movement, l0"),
    (["pruner.lambda_final=400"], "lambda_final", "movement", "soft_movement, l0"),
    (["pruner.method=soft_movement", "pruner.scores_init_from=magnitude"], "scores_init_from", "soft_movement",
     "movement"),
])
def test_a_key_of_another_method_is_an_error_naming_the_methods_that_have_it(write_recipe, overrides, key, method,
                                                                            takers):
    """It was silently cleared: the run trained without the setting the recipe asked for."""
    with pytest.raises(RecipeError) as info:
        load_recipe(write_recipe(), overrides)
    # The fix the message offers works: null leaves a key of another method out.
    assert load_recipe(write_recipe(), [*overrides, f"pruner.{key}=null"]).pruner.method == method
    assert info.value.problems == [f"pruner.{key}: method '{method}' has no key {key}; it is a key of {takers} "
                                   f"(remove it or override it with pruner.{key}=null, or set pruner.method to "
                                   f"{'that method' if ',' not in takers else 'one of those'})"]


def test_resolved_recipe_round_trips(write_recipe, tmp_path):
    recipe = load_recipe(write_recipe(), ["train.max_steps=7"])
    again = tmp_path / "again.yaml"
    again.write_text(recipe.to_yaml())
    assert load_recipe(again) == recipe


def test_every_problem_is_reported_at_once(write_recipe):
    with pytest.raises(RecipeError) as info:
        load_recipe(write_recipe(), ["pruner.methd=movement", "train.batch_size=abc", "trian.lr=1"])
    problems = info.value.problems
    assert len(problems) == 3
    assert any("pruner.methd" in p and "did you mean 'method'" in p for p in problems)
    assert any("train.batch_size" in p and "'abc'" in p for p in problems)
    assert any("'trian'" in p and "did you mean 'train'" in p for p in problems)


def test_unknown_task_and_method_are_reported_beside_schema_errors(write_recipe):
    with pytest.raises(RecipeError) as info:
        load_recipe(write_recipe(), ["task=sst3", "pruner.method=movment", "train.batch_size=abc"])
    problems = info.value.problems
    assert len(problems) == 3
    assert any("train.batch_size" in p for p in problems)
    assert any("unknown task 'sst3'" in p and "did you mean 'sst2'" in p for p in problems)
    assert any("unknown pruning method 'movment'" in p and "did you mean 'movement'" in p for p in problems)


@pytest.mark.parametrize("override, expected", [
    ("pruner.remaining_pct=0", "pruner.remaining_pct"),
    ("pruner.remaining_pct=150", "pruner.remaining_pct"),
    ("pruner.method=movment", "did you mean 'movement'"),
    ("task=sst3", "did you mean 'sst2'"),
    ("pruner.initial_warmup=0.85", "final_warmup"),
    ("train.max_steps", "key=value"),
])
def test_bad_values_name_the_key(write_recipe, override, expected):
    with pytest.raises(RecipeError) as info:
        load_recipe(write_recipe(), [override])
    assert expected in str(info.value)
    assert str(write_recipe()) in str(info.value)  # names the file


def test_movement_without_target_is_an_error(write_recipe):
    with pytest.raises(RecipeError, match="remaining_pct"):
        load_recipe(write_recipe(), ["pruner.remaining_pct=null"])


def test_yaml_is_read_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("task: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)


@pytest.mark.parametrize("args, fragment", [
    (["pruner.methd=movement"], "unknown key 'pruner.methd' (did you mean 'method'?)"),
    (["pruner.method=prune_everything"], "unknown pruning method 'prune_everything'"),
    (["pruner.method=magnitude", "pruner.scores_init=-1.5"],
     "pruner.scores_init: method 'magnitude' has no key scores_init; it is a key of movement, soft_movement, l0"),
    (["pruner.remaining_pct=0"], "pruner.remaining_pct"),
    (["pruner.remaining_pct=150"], "pruner.remaining_pct"),
    (["data_dir=/nonexistent/glue"], "/nonexistent/glue/SST-2/{train.tsv, dev.tsv} not found"),
    (["model=no-such-model-anywhere"], "model 'no-such-model-anywhere'"),
    (["task=mnli"], "MNLI/{train.tsv, dev_matched.tsv, dev_mismatched.tsv} not found"),
    (["train.batch_size=0"], "train.batch_size"),
])
def test_cli_reports_bad_input_in_one_line_with_exit_code_2(write_recipe, args, fragment):
    path = write_recipe()
    proc = run_cli("run", str(path), *args, "--dry-run")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0]
    assert lines[0].startswith("error:")


def test_cli_missing_recipe_file(tmp_path):
    proc = run_cli("run", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert "nope.yaml" in proc.stderr and "not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_dry_run_prints_the_resolved_recipe(write_recipe):
    proc = run_cli("run", str(write_recipe()), "train.max_steps=3", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["train"]["max_steps"] == 3
    assert printed["pruner"]["scores_lr"] == 0.01  # movement's default, resolved


def test_shipped_recipes_are_valid(monkeypatch):
    from pathlib import Path

    import movprune

    monkeypatch.chdir(Path(movprune.__file__).resolve().parents[2])
    recipes = sorted(Path(movprune.__file__).parent.joinpath("recipes").rglob("*.yaml"))
    assert recipes
    for path in recipes:
        load_recipe(path)  # raises on any problem


def test_tiny_recipe_helper_is_a_valid_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(tmp_path)))
    assert load_recipe(path).model == "tiny-random-bert"


def test_reading_a_recipe_schema_needs_no_torch(tmp_path):
    """The recipe module and its schema load without torch or datasets (compare and resume read saved
    recipes with ``Recipe.model_validate``); ``validate_recipe``'s task and method checks import them."""
    data = tiny_recipe_dict(tmp_path)
    code = ("import sys; from movprune.recipe import Recipe, load_recipe; "
            f"Recipe.model_validate({data!r}); "
            "print(sorted(m for m in ('torch', 'datasets', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                         env={"PYTHONPATH": str(REPO / "src"), "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
