"""Run identity: the kind of every recipe key, and the rules (resume, skip, compare, teacher cache) that ask it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest
import yaml
from pydantic import BaseModel

from movprune import identity
from movprune.errors import RecipeError
from movprune.pruners.config import CONFIGS, METHOD_SPECIFIC_KEYS
from movprune.recipe import Recipe, validate_recipe

from conftest import tiny_recipe_dict

#: The kind of every key of the recipe schema. A new key fails test_every_recipe_key_has_its_kind
#: until it is given its kind here and in movprune.identity.
KINDS = {
    "name": "output", "output_dir": "output",
    "train.save_every_steps": "operational", "train.keep_checkpoints": "operational",
    "train.report_to": "operational", "train.log_every_steps": "operational",
    "train.eval_every_steps": "operational",
    "seed": "axis", "pruner.method": "axis", "pruner.remaining_pct": "axis",
    **{k: "material" for k in (
        "task", "model", "data_dir", "train_split", "eval_split",
        "dataset.files", "dataset.name", "dataset.config", "dataset.text_columns", "dataset.label_column",
        "dataset.label_names", "dataset.question_column", "dataset.context_column", "dataset.answers_column",
        "dataset.id_column", "dataset.metrics",
        "pruner.initial_warmup", "pruner.final_warmup", "pruner.scope", "pruner.pattern", "pruner.block_shape",
        "pruner.bias_correction", "pruner.scores_lr", "pruner.scores_init", "pruner.scores_init_from",
        "pruner.lambda_final", "pruner.sigmoid_threshold_initial", "pruner.sigmoid_threshold_final",
        "pruner.sensitivity_beta1", "pruner.sensitivity_beta2", "pruner.calibration_samples", "pruner.rearrange",
        "pruner.rescale", "pruner.rescale_damping", "pruner.flops_pct", "pruner.flops_seq_tokens",
        "pruner.latency_table", "pruner.latency_ms",
        "train.epochs", "train.max_steps", "train.batch_size", "train.eval_batch_size", "train.lr",
        "train.weight_decay", "train.lr_warmup_fraction", "train.max_grad_norm", "train.max_seq_length",
        "train.doc_stride", "train.bf16", "train.freeze_embeddings", "train.max_train_samples",
        "train.max_eval_samples", "distill.teacher", "distill.alpha_ce", "distill.alpha_distil",
        "distill.temperature")},
}


def _schema_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every leaf key of ``model``, walked here independently of movprune.identity: a section
    (one model, an optional one, or the pruner union with every method's config) is descended."""
    keys = set()
    for name, field in model.model_fields.items():
        ann = field.annotation
        members = [c for c in (ann, *get_args(ann)) if isinstance(c, type) and issubclass(c, BaseModel)]
        if model is Recipe and name == "pruner":
            members = list(CONFIGS.values())
        if members:
            for member in members:
                keys |= _schema_keys(member, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_every_recipe_key_has_its_kind():
    walked = _schema_keys(Recipe)
    assert {f"pruner.{k}" for k in METHOD_SPECIFIC_KEYS} <= walked  # every method's own keys are walked
    assert walked == set(KINDS), (f"keys without a kind: {sorted(walked - set(KINDS))}; "
                                  f"gone: {sorted(set(KINDS) - walked)}")
    assert identity.key_kinds() == KINDS
    for key, kind in KINDS.items():
        assert identity.kind_of(key) == kind, key
    # Inside a mapping-valued key, a section, an unknown key.
    assert identity.kind_of("dataset.files.train") == "material"
    assert identity.kind_of("train") == "material"
    assert identity.kind_of("train.lrr") is None


def _recipe(tmp_path: Path, **train) -> Recipe:
    data = tiny_recipe_dict(tmp_path / "results")
    data["train"].update(train)
    return validate_recipe(data, "test")


OPERATIONAL_CHANGES = {"train.save_every_steps": 5, "train.keep_checkpoints": 7, "train.report_to": ["tensorboard"],
                       "train.log_every_steps": 1, "train.eval_every_steps": 3}


def _changed(recipe: Recipe, key: str, value) -> Recipe:
    data = recipe.model_dump(mode="json")
    node = data
    *path, last = key.split(".")
    for part in path:
        node = node[part]
    node[last] = value
    return Recipe.model_validate(data)


def test_operational_and_output_keys_leave_the_experiment_the_same_and_material_ones_do_not(tmp_path):
    base = _recipe(tmp_path)
    for key, value in {**OPERATIONAL_CHANGES, "name": "other", "output_dir": "elsewhere"}.items():
        assert identity.same_experiment(base, _changed(base, key, value)) == [], key
    for key, value in {"train.lr": 0.5, "train.eval_batch_size": 8, "seed": 3, "pruner.pattern": "hybrid",
                       "train.max_eval_samples": 10}.items():
        assert identity.same_experiment(base, _changed(base, key, value)) == [key], key
    # Leaving the sequence length to the task and writing its default out are one setting.
    assert identity.same_experiment(_changed(base, "train.max_seq_length", None),
                                    _changed(base, "train.max_seq_length", 128)) == []


def test_a_saved_recipe_written_before_the_per_method_configs_reads_as_the_same_experiment(tmp_path):
    base = _recipe(tmp_path)
    older = yaml.safe_load(base.to_yaml())
    older["pruner"] = {**{k: None for k in METHOD_SPECIFIC_KEYS}, **older["pruner"]}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(older))
    assert identity.same_experiment(identity.read_saved_recipe(run_dir), base) == []
    assert identity.load_saved_recipe(run_dir) == base


def test_resume_accepts_operational_changes_and_names_a_material_one(tmp_path):
    from movprune.training import checkpoint

    base = _recipe(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text(base.to_yaml())
    for key, value in OPERATIONAL_CHANGES.items():
        checkpoint.check_same_recipe(run_dir, _changed(base, key, value))
    with pytest.raises(RecipeError, match=r"cannot resume: .*train\.lr \(started with 0\.001, now 0\.5\)") as e:
        checkpoint.check_same_recipe(run_dir, _changed(_changed(base, "train.lr", 0.5), "train.save_every_steps", 2))
    assert "save_every_steps" not in str(e.value)


def test_the_teacher_cache_key_ignores_operational_keys_and_changes_with_a_material_one(tmp_path):
    from movprune.training import distill

    base = Recipe.model_validate({**_recipe(tmp_path).model_dump(mode="json"), "distill": {"teacher": "auto"}})
    key = distill.teacher_key(base)
    for name, value in {**OPERATIONAL_CHANGES, "name": "x", "output_dir": str(tmp_path / "y")}.items():
        assert distill.teacher_key(_changed(base, name, value)) == key, name
    for name, value in {"train.lr": 0.5, "train.eval_batch_size": 8, "train.max_train_samples": 100,
                        "seed": 5}.items():
        assert distill.teacher_key(_changed(base, name, value)) != key, name
    # The student's own pruning and distillation settings do not make another teacher.
    assert distill.teacher_key(_changed(base, "pruner.remaining_pct", 3)) == key
    assert distill.teacher_key(_changed(base, "distill.temperature", 4.0)) == key
    assert identity.experiment_key(base) == identity.experiment_key(_changed(base, "train.eval_every_steps", 2))


def _write_run(root: Path, name: str, seed: int, accuracy: float, **train) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({
        "name": name, "task": "sst2", "model": "minilm-l6", "pruner": "movement", "target_remaining_pct": 10,
        "remaining_pct": 10.0, "metrics": {"accuracy": accuracy}, "metric_names": ["accuracy"], "seed": seed,
        "steps": 10, "train_seconds": 1.0, "versions": {}, "distill": None}))
    recipe = {"task": "sst2", "name": name, "seed": seed, "output_dir": str(root),
              "pruner": {"method": "movement", "remaining_pct": 10}, "train": {"max_steps": 10, **train}}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))


def test_two_seeds_differing_only_in_an_operational_key_share_a_compare_column(tmp_path):
    from movprune.experiments.compare import Column, build_comparisons, scan_runs

    root = tmp_path / "runs"
    _write_run(root, "a", 1, 80.0, save_every_steps=5)
    _write_run(root, "b", 2, 70.0, eval_every_steps=2, report_to=["tensorboard"])
    (comp,) = build_comparisons(scan_runs([root]).results)
    assert comp.columns == [Column("movement")] and comp.warnings == []
    cell = comp.rows[0].cells[Column("movement")]
    assert cell.seeds == [1, 2] and cell.metrics["accuracy"].mean == 75.0
    # A material key does split them.
    _write_run(root, "c", 3, 60.0, lr=1e-4)
    (comp,) = build_comparisons(scan_runs([root]).results)
    assert comp.columns == [Column("movement", (("train.lr", 3e-05),)), Column("movement", (("train.lr", 0.0001),))]
    assert comp.rows[0].cells[comp.columns[0]].seeds == [1, 2]


def test_a_sweep_skips_a_finished_run_that_differs_only_in_operational_keys(tmp_path, finished_run):
    import shutil

    from movprune.experiments import sweep

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tmp_path / "results")))
    (planned,) = sweep.plan_sweep(recipe, remaining_pcts=[10], methods=["movement"], seeds=[0])
    shutil.copytree(finished_run, planned.run_dir)
    saved = planned.recipe
    for key, value in OPERATIONAL_CHANGES.items():
        saved = _changed(saved, key, value)
    (planned.run_dir / "recipe.yaml").write_text(saved.to_yaml())
    assert sweep.recipe_differences(planned) == []
    (planned.run_dir / "recipe.yaml").write_text(_changed(saved, "train.eval_batch_size", 8).to_yaml())
    assert sweep.recipe_differences(planned) == ["train.eval_batch_size: 8 -> 64"]
