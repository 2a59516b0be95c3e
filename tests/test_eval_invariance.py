"""A mid-run evaluation or checkpoint changes none of a run's numbers: for every method, the final
weights and masks (the saved model's tensors, exactly), the metrics and the training curve of a
tiny-random-bert run on the SST-2 fixture with ``train.eval_every_steps`` or
``train.save_every_steps`` set equal those of the same run without."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from movprune.pruners import build_pruner, pruner_config
from movprune.recipe import TrainConfig, validate_recipe
from movprune.training.loop import build_optimizer, run, train_step

from conftest import tiny_bert, tiny_recipe_dict

# 12 steps logged every 3; evaluations or checkpoints every 4 land inside the pruning ramp and
# between logging steps (where the logging window is part full).
TRAIN = {"max_steps": 12, "log_every_steps": 3, "max_train_samples": 96, "max_eval_samples": 32}
METHODS = {
    "none": {"method": "none", "remaining_pct": None},
    "magnitude": {"method": "magnitude", "remaining_pct": 10},
    "magnitude-hybrid": {"method": "magnitude", "remaining_pct": 50, "pattern": "hybrid"},
    "movement": {"method": "movement", "remaining_pct": 10},
    "movement-global": {"method": "movement", "remaining_pct": 10, "scope": "global"},
    "soft_movement": {"method": "soft_movement", "remaining_pct": 10},
    "l0": {"method": "l0", "remaining_pct": 10},
    "sensitivity": {"method": "sensitivity", "remaining_pct": 10},
    "movement-bias_correction": {"method": "movement", "remaining_pct": 10, "bias_correction": True},
}


def _run(out: Path, name: str, pruner: dict, **train) -> Path:
    data = tiny_recipe_dict(out, pruner=pruner, train={**TRAIN, **train})
    data["name"] = name
    run(validate_recipe(data, "test"))
    return out / name


def _training_curve(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "samples_per_second"} for line in lines if "eval" not in line]


def _assert_same_numbers(a: Path, b: Path) -> None:
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    for key in ("metrics", "remaining_pct", "remaining_by_module", "pruner_summary", "mask_sha256_by_process"):
        assert ra[key] == rb[key], key
    wa, wb = (load_file(str(d / "model" / "model.safetensors")) for d in (a, b))
    assert wa.keys() == wb.keys()
    differ = [key for key in wa if not torch.equal(wa[key], wb[key])]
    assert not differ, f"{len(differ)} tensors differ, first {differ[0]}"
    assert _training_curve(a) == _training_curve(b)


@pytest.mark.parametrize("method", list(METHODS))
def test_mid_run_evaluations_and_checkpoints_change_no_number(tmp_path, method):
    pruner = METHODS[method]
    plain = _run(tmp_path, "plain", pruner)
    evaluated = _run(tmp_path, "evaluated", pruner, eval_every_steps=4)
    evals = [line["step"] for line in map(json.loads, (evaluated / "metrics.jsonl").read_text().splitlines())
             if "eval" in line and not line.get("final")]
    assert evals == [4, 8]  # the evaluations did run
    _assert_same_numbers(plain, evaluated)
    checkpointed = _run(tmp_path, "checkpointed", pruner, save_every_steps=4, keep_checkpoints=3)
    _assert_same_numbers(plain, checkpointed)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


@pytest.mark.parametrize("method", list(METHODS))
def test_an_evaluation_shows_the_next_steps_masks_and_leaves_the_pruner_as_it_was(method):
    """The root of the guarantee above: after ``Pruner.evaluation()`` the pruner's state (top-k search
    bands, controller, schedule position: what the next step computes from) is the state before it."""
    torch.manual_seed(0)
    model = tiny_bert()
    pruner = build_pruner(pruner_config(**{k: v for k, v in METHODS[method].items() if v is not None}), 10)
    pruner.attach(model)
    optimizer = build_optimizer(model, pruner, TrainConfig(lr=1e-2))
    batch = {"input_ids": torch.randint(0, 100, (8, 16)), "labels": torch.randint(0, 2, (8,))}
    for step in range(5):  # into the pruning ramp, with scores and weights that moved
        train_step(model, batch, step, pruner=pruner, optimizer=optimizer, max_grad_norm=1.0)
    before = copy.deepcopy(pruner.state_dict())
    model.eval()
    with pruner.evaluation():
        assert pruner.current_step == 5
        seen = [layer.weight.detach().clone() for layer in pruner.layers.values()]
    assert _same(pruner.state_dict(), before)
    pruner.step(5)  # what the next training step computes first
    assert all(torch.equal(w, layer.weight) for w, layer in zip(seen, pruner.layers.values()))
