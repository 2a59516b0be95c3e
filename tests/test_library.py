"""The library API (movprune.attach, PruningSession, PruningTrainer) against ``movprune run``, the
Trainer integration's checkpoints, misuse, and the two examples as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import REPO, TINY_GLUE_DIR, tiny_recipe_dict

METHODS = {
    "movement": {"method": "movement", "remaining_pct": 10},
    "soft_movement": {"method": "soft_movement", "remaining_pct": 20},
    "l0": {"method": "l0", "remaining_pct": 30},
    "magnitude": {"method": "magnitude", "remaining_pct": 10},
    "sensitivity": {"method": "sensitivity", "remaining_pct": 15},
}


def _own_loop(recipe, out: Path):
    """``recipe`` trained by a hand-written PyTorch loop that drives the pruner through the public API:
    the loop's data (tokenised splits, shuffled by a generator seeded with the recipe's seed) and
    optimizer settings, nothing of the loop itself."""
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    import movprune
    from movprune import tasks
    from movprune.models import resolve_model
    from movprune.training.data import prepare_data

    set_seed(recipe.seed)
    task = tasks.get_task(recipe.task)
    resolved = resolve_model(recipe.model)
    tokenizer = resolved.tokenizer()
    data = prepare_data(task, recipe, tokenizer)
    model = task.build_model(resolved)
    model.base_model.embeddings.requires_grad_(False)
    steps = recipe.train.max_steps
    session = movprune.attach(model, recipe.pruner.model_dump(), total_steps=steps)
    optimizer = torch.optim.AdamW(session.optimizer_groups(recipe.train.weight_decay), lr=recipe.train.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(recipe.train.lr_warmup_fraction * steps), steps)
    shuffling = torch.Generator().manual_seed(recipe.seed)
    loader = torch.utils.data.DataLoader(data.train, batch_size=recipe.train.batch_size, shuffle=True,
                                         collate_fn=task.collate(tokenizer), generator=shuffling)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    batches = iter(())
    model.train()
    for step in range(steps):
        batch = next(batches, None)
        if batch is None:
            batches = iter(loader)
            batch = next(batches)
        session.before_forward(step)
        loss = session.loss(model(**batch).loss)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        session.after_optimizer_step()
    session.bake()
    return session.save(out, tokenizer, task=recipe.task, metrics={"accuracy": 0.0}, seed=recipe.seed,
                        model_name=recipe.model)


@pytest.mark.parametrize("method", list(METHODS))
def test_own_loop_through_the_api_equals_movprune_run(tmp_path, method):
    from movprune.recipe import validate_recipe
    from movprune.training import run

    recipe = validate_recipe(tiny_recipe_dict(tmp_path / "runs", pruner=METHODS[method],
                                              train={"max_steps": 24, "max_train_samples": 160}), "test")
    ran = run(recipe)
    ours = _own_loop(recipe, tmp_path / "api")
    a = load_file(str(Path(ran.run_dir) / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "api" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert ours.remaining_pct == ran.remaining_pct
    assert ours.remaining_by_module == ran.remaining_by_module
    assert 0 < ran.remaining_pct < 100
