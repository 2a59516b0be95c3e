"""The ``pruner:`` section as one config class per method, and the files written before it: a
``recipe.yaml`` listing every method's keys (the unused ones null) loads everywhere, unchanged."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError

from movprune import pruners
from movprune.experiments.compare import variants
from movprune.pruners.config import CONFIGS, METHOD_SPECIFIC_KEYS
from movprune.recipe import load_recipe, validate_recipe
from movprune.results import RunResult
from movprune.training import checkpoint

#: The pruner section of a soft-movement run's recipe.yaml as movprune wrote it before the
#: per-method configs (``movprune run`` of the quickstart settings, resolved): every key present.
OLD_PRUNER_SECTION = """\
pruner:
  method: soft_movement
  remaining_pct: 10.0
  initial_warmup: 0.1
  final_warmup: 0.2
  scores_lr: 0.01
  scope: local
  scores_init: -1.5
  lambda_final: null
  sigmoid_threshold_initial: 0.0
  sigmoid_threshold_final: 0.1
  pattern: unstructured
  block_shape: null
  bias_correction: false
  scores_init_from: null
  sensitivity_beta1: null
  sensitivity_beta2: null
"""


def _old_and_new(tmp_path, write_recipe):
    """The same run's recipe.yaml as written before the per-method configs and as written now."""
    fresh = load_recipe(write_recipe(pruner={"method": "soft_movement", "remaining_pct": 10, "scores_init": -1.5}))
    new = yaml.safe_load(fresh.to_yaml())
    old = {**new, "pruner": yaml.safe_load(OLD_PRUNER_SECTION)["pruner"]}
    paths = {}
    for name, data in (("old", old), ("new", new)):
        (tmp_path / name).mkdir()
        paths[name] = tmp_path / name / "recipe.yaml"
        paths[name].write_text(yaml.safe_dump(data, sort_keys=False))
    return fresh, paths


def test_every_registered_method_has_a_config_class_and_no_other():
    assert list(CONFIGS) == pruners.method_names()
    assert METHOD_SPECIFIC_KEYS == {"scores_lr", "scores_init", "scores_init_from", "lambda_final",
                                    "sigmoid_threshold_initial", "sigmoid_threshold_final",
                                    "sensitivity_beta1", "sensitivity_beta2", "calibration_samples", "rearrange",
                                    "rescale", "flops_pct", "flops_seq_tokens", "rescale_damping",
                                    "latency_table", "latency_ms"}
    assert pruners.methods_taking("scores_init") == ["movement", "soft_movement", "l0"]
    assert pruners.methods_taking("scope") == pruners.method_names()
    assert pruners.methods_taking("scores_lrr") == []


def test_the_config_is_the_class_of_its_method_and_none_when_unnamed():
    assert type(pruners.pruner_config(method="l0", lambda_final=3)).__name__ == "L0Config"
    assert pruners.pruner_config().method == "none"
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        pruners.pruner_config(method="magnitude", scores_lr=0.1)


def test_a_recipe_written_before_the_per_method_configs_loads_as_the_same_recipe(tmp_path, write_recipe):
    fresh, paths = _old_and_new(tmp_path, write_recipe)
    assert load_recipe(paths["old"]) == load_recipe(paths["new"]) == fresh
    assert set(fresh.pruner.model_dump()) == set(yaml.safe_load(OLD_PRUNER_SECTION)["pruner"]) - {
        "scores_init_from", "sensitivity_beta1", "sensitivity_beta2", "calibration_samples", "rearrange",
                                    "rescale", "flops_pct", "flops_seq_tokens", "rescale_damping"}
    # Resuming a run started with the old file: the same recipe, no "changed" key.
    checkpoint.check_same_recipe(paths["old"].parent, fresh)


def test_old_and_new_runs_of_one_setting_share_a_comparison_cell(tmp_path, write_recipe):
    """compare groups runs by every key of recipe.yaml: the old file's null keys must not split them."""
    _, paths = _old_and_new(tmp_path, write_recipe)
    runs = [{"run_dir": str(paths[name].parent), "task": "sst2", "steps": 10, "num_processes": 1}
            for name in ("old", "new")]
    assert variants.run_settings(runs[0]) == variants.run_settings(runs[1])
    differing, groups = variants.split_by_settings(runs)
    assert differing == [] and len(groups) == 1


def test_an_old_result_json_loads_with_its_pruner_config(tmp_path):
    config = yaml.safe_load(OLD_PRUNER_SECTION.replace("soft_movement", "movement"))["pruner"]
    config["scores_init_from"] = "constant"
    result = {"name": "r", "task": "sst2", "model": "minilm-l6", "pruner": "movement", "pruner_config": config,
              "target_remaining_pct": 10, "remaining_pct": 10.0, "metrics": {"accuracy": 80.0}, "seed": 42,
              "steps": 10, "train_seconds": 1.0, "versions": {}}
    (tmp_path / "result.json").write_text(json.dumps(result))
    loaded = RunResult.load(tmp_path)
    assert loaded.pruner_config == config
    assert pruners.variant_label("movement", loaded.pruner_config) == "movement"
    # The run's pruner section validates as a movement config (its null keys say nothing).
    section = {k: v for k, v in config.items() if k not in ("sigmoid_threshold_initial", "sigmoid_threshold_final")}
    assert pruners.pruner_config(**section).scores_init == -1.5


def test_validate_recipe_accepts_a_section_with_every_key_null_for_the_default_method():
    section = {key: None for key in METHOD_SPECIFIC_KEYS}
    recipe = validate_recipe({"task": "sst2", "pruner": section}, "x.yaml")
    assert recipe.pruner.method == "none"
    assert set(recipe.pruner.model_dump()) == set(pruners.BasePrunerConfig.model_fields)
