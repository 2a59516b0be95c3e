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

from conftest import REPO, TINY_GLUE_DIR, tiny_recipe_dict

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


def _example(name: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python examples/NAME.py`` as the README tells a user to run it, from the repository root."""
    return subprocess.run([sys.executable, f"examples/{name}.py", "--model", "tiny-random-bert",
                           "--data-dir", str(TINY_GLUE_DIR), "--output-dir", str(out), "--batch-size", "16",
                           "--lr", "1e-3", *extra], capture_output=True, text=True, cwd=REPO, timeout=600)


def _check_run_folder(out: Path, target: float, tmp_path: Path) -> dict:
    from conftest import run_cli

    result = yaml.safe_load((out / "result.json").read_text())  # JSON is YAML
    assert result["source"] == "library" and result["target_remaining_pct"] == target
    inspected = run_cli("inspect", str(out))
    assert inspected.returncode == 0, inspected.stderr
    exported = run_cli("export", str(out), "--format", "compact", "--to", str(tmp_path / "compact"))
    assert exported.returncode == 0, exported.stderr
    card = (tmp_path / "compact" / "README.md").read_text()
    assert "library API" in card and "reproduces it" not in card
    compared = run_cli("compare", str(out), "--format", "csv")
    assert compared.returncode == 0, compared.stderr
    assert result["pruner"] in compared.stdout
    return result


def test_own_loop_example_runs_and_its_folder_is_inspected_and_exported(tmp_path):
    out = tmp_path / "loop-run"
    done = _example("own_loop", out, "--method", "l0", "--remaining-pct", "30", "--max-steps", "8")
    assert done.returncode == 0, done.stderr[-3000:]
    result = _check_run_folder(out, 30.0, tmp_path)
    assert result["remaining_pct"] == pytest.approx(30.0, abs=0.01)  # the controller, then the final calibration
    assert "accuracy" in result["metrics"] and result["steps"] == 8


class _Killed(Exception):
    pass


def _trainer_masks(out: Path, method: dict, *, stop_after: int | None = None, resume: bool = False):
    """A PruningTrainer run of 8 steps with a checkpoint every 3; ``stop_after`` kills it (an exception,
    as a crash would) when that many steps are done and checkpointed; ``resume`` continues from the newest
    checkpoint. Returns the baked weights of the pruned matrices."""
    from datasets import load_dataset
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        TrainerCallback,
        TrainingArguments,
    )

    import movprune
    from movprune.models import resolve_model
    from movprune.pruners.counting import prunable_linears

    class Kill(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if stop_after is not None and state.global_step == stop_after:
                raise _Killed

    resolved = resolve_model("tiny-random-bert")
    tokenizer = resolved.tokenizer()
    torch.manual_seed(0)
    model = resolved.instantiate(AutoModelForSequenceClassification, num_labels=2)
    data = load_dataset("csv", data_files={"train": str(TINY_GLUE_DIR / "SST-2" / "train.tsv")}, delimiter="\t",
                        quoting=3)["train"]
    data = data.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=32), batched=True,
                    remove_columns=["sentence"])
    args = TrainingArguments(output_dir=str(out), max_steps=8, save_steps=3, per_device_train_batch_size=16,
                             learning_rate=1e-3, seed=0, report_to=[], disable_tqdm=True, use_cpu=True)
    trainer = movprune.PruningTrainer(model=model, args=args, train_dataset=data, callbacks=[Kill()],
                                      data_collator=DataCollatorWithPadding(tokenizer), pruning=method)
    trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.pruning.bake()
    return {name: layer.weight.detach().clone() for name, layer in prunable_linears(model).items()}


@pytest.mark.parametrize("method", [METHODS["movement"], METHODS["soft_movement"]], ids=lambda m: m["method"])
def test_trainer_resumed_from_its_checkpoint_ends_with_the_masks_of_an_uninterrupted_run(tmp_path, method):
    whole = _trainer_masks(tmp_path / "whole", method)
    with pytest.raises(_Killed):
        _trainer_masks(tmp_path / "parts", method, stop_after=6)
    assert (tmp_path / "parts" / "checkpoint-6" / "movprune_pruner_state.json").is_file()
    resumed = _trainer_masks(tmp_path / "parts", method, resume=True)
    for name, weight in whole.items():
        assert torch.equal(weight != 0, resumed[name] != 0), name
        assert torch.allclose(weight, resumed[name], atol=1e-6), name
    assert any(bool((w == 0).any()) for w in whole.values())


def test_trainer_killed_while_rotating_checkpoints_resumes_from_the_newest_complete_one(tmp_path, monkeypatch):
    """A kill after the Trainer wrote checkpoint-6 but before it rotated the old ones (where a callback's
    on_save would have come) leaves the pruner's state in checkpoint-6; a newer folder a kill left
    half-written (no trainer_state.json) is passed over by resume_from_checkpoint=True."""
    import transformers.trainer

    import movprune
    from movprune.library import hf

    method = METHODS["soft_movement"]
    whole = _trainer_masks(tmp_path / "whole", method)
    rotate = transformers.trainer.rotate_checkpoints

    def killed_at_six(*args, **kwargs):
        if kwargs.get("output_dir", args[0] if args else None) and (tmp_path / "parts" / "checkpoint-6").is_dir():
            raise _Killed
        return rotate(*args, **kwargs)

    monkeypatch.setattr(transformers.trainer, "rotate_checkpoints", killed_at_six)
    with pytest.raises(_Killed):
        _trainer_masks(tmp_path / "parts", method)
    monkeypatch.setattr(transformers.trainer, "rotate_checkpoints", rotate)
    six = tmp_path / "parts" / "checkpoint-6"
    assert hf.has_session_state(six) and not list(six.glob(".*partial"))
    half = tmp_path / "parts" / "checkpoint-7"
    half.mkdir()
    (half / "config.json").write_text("{}")
    assert hf.last_complete_checkpoint(tmp_path / "parts") == six
    resumed = _trainer_masks(tmp_path / "parts", method, resume=True)
    for name, weight in whole.items():
        assert torch.equal(weight != 0, resumed[name] != 0), name
        assert torch.allclose(weight, resumed[name], atol=1e-6), name
    # A damaged state is one typed line, not a traceback.
    (six / f"{hf.STATE_STEM}.safetensors").write_bytes(b"not safetensors")
    session = movprune.attach(_tiny_model(), method, total_steps=8)
    with pytest.raises(movprune.PruningSessionError) as e:
        hf.load_session_state(session, six)
    assert "unreadable" in _one_line(e) and str(six) in _one_line(e)
    with pytest.raises(movprune.PruningSessionError) as e:
        hf.load_session_state(session, half)
    assert "no movprune_pruner_state.json" in _one_line(e)


def _ga_trainer_weights(out: Path, batch_size: int, accumulation: int, *, summed_loss: bool = False
                        ) -> tuple[dict[str, torch.Tensor], float]:
    """A PruningTrainer (soft movement, a fixed λ, plain SGD, no dropout) of 4 optimizer steps at
    ``batch_size`` per micro-batch and ``accumulation`` micro-batches per step: every parameter
    (scores included) at the end, and the remaining % after baking. ``summed_loss``: a
    ``compute_loss_func`` that scales the task loss itself (summed, over the step's examples)."""
    from datasets import load_dataset
    from transformers import DataCollatorWithPadding, TrainingArguments

    import movprune
    from movprune.models import resolve_model

    resolved = resolve_model("tiny-random-bert")
    tokenizer = resolved.tokenizer()
    torch.manual_seed(0)
    model = _tiny_model()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0  # the two runs see the same examples; dropout would draw differently
    data = load_dataset("csv", data_files={"train": str(TINY_GLUE_DIR / "SST-2" / "train.tsv")}, delimiter="\t",
                        quoting=3)["train"]
    data = data.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=32), batched=True,
                    remove_columns=["sentence"])
    args = TrainingArguments(output_dir=str(out), max_steps=4, per_device_train_batch_size=batch_size,
                             gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=0.5,
                             lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0, seed=0,
                             save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True)
    trainer = movprune.PruningTrainer(model=model, args=args, train_dataset=data,
                                      data_collator=DataCollatorWithPadding(tokenizer, padding="max_length",
                                                                            max_length=32),
                                      pruning={"method": "soft_movement", "lambda_final": 1000.0, "scores_lr": 1.0},
                                      compute_loss_func=_summed_cross_entropy if summed_loss else None)
    trainer.train()
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer.pruning.bake()
    return weights, trainer.pruning.remaining_pct()


def _summed_cross_entropy(outputs, labels, num_items_in_batch=None):
    return torch.nn.functional.cross_entropy(outputs.logits, labels, reduction="sum") / num_items_in_batch


@pytest.mark.parametrize("summed_loss", [False, True], ids=["model-loss", "compute_loss_func"])
def test_trainer_gradient_accumulation_equals_one_batch_of_all_micro_batches(tmp_path, summed_loss):
    """Two micro-batches of 8 per step train exactly as one batch of 16: the task loss and the penalty
    each count once per optimizer step (plain SGD: any extra factor would show in the weights), with
    the head's own mean loss and with a compute_loss_func that scales it over the step's examples."""
    one, one_remaining = _ga_trainer_weights(tmp_path / "one", 16, 1, summed_loss=summed_loss)
    two, two_remaining = _ga_trainer_weights(tmp_path / "two", 8, 2, summed_loss=summed_loss)
    assert one_remaining == pytest.approx(two_remaining)
    scores = [name for name in one if "scores" in name]
    assert scores
    torch.manual_seed(0)
    start = _tiny_model().state_dict()
    assert any(not torch.allclose(one[n], start[n]) for n in one if n in start)  # it trained
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-5, rtol=1e-4), name


# -- misuse --------------------------------------------------------------------------------------


def _tiny_model():
    from transformers import AutoModelForSequenceClassification

    from movprune.models import resolve_model

    return resolve_model("tiny-random-bert").instantiate(AutoModelForSequenceClassification, num_labels=2)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


def test_misuse_raises_a_typed_error_with_one_line():
    import movprune

    model = _tiny_model()
    session = movprune.PruningSession({"method": "movement", "remaining_pct": 10}, total_steps=4)
    with pytest.raises(movprune.PruningSessionError) as e:
        session.before_forward(0)
    assert "before attach()" in _one_line(e)
    session.attach(model)
    with pytest.raises(movprune.PruningSessionError) as e:
        session.attach(model)
    assert "already attached" in _one_line(e)
    with pytest.raises(movprune.PruningSessionError) as e:
        movprune.attach(model, {"method": "magnitude", "remaining_pct": 10}, total_steps=4)
    assert "already carries masks" in _one_line(e)
    with pytest.raises(movprune.PruningSessionError) as e:
        session.before_forward(4)
    assert "0 to total_steps - 1 = 3" in _one_line(e)
    session.bake()
    with pytest.raises(movprune.PruningSessionError) as e:
        session.after_optimizer_step()
    assert "after bake()" in _one_line(e)
    with pytest.raises(movprune.PruningSessionError) as e:
        movprune.attach(torch.nn.Sequential(torch.nn.Embedding(4, 4)), {"method": "magnitude", "remaining_pct": 10}, 4)
    assert "no encoder nn.Linear layer" in _one_line(e)
    for steps in (True, 2.0, -1):
        with pytest.raises(movprune.PruningSessionError) as e:
            movprune.PruningSession({"method": "movement", "remaining_pct": 10}, total_steps=steps)
        assert f"total_steps={steps!r}" in _one_line(e)


def test_trainer_refuses_an_optimizer_without_the_scores(tmp_path):
    from transformers import TrainingArguments

    import movprune

    model = _tiny_model()
    session = movprune.attach(model, {"method": "movement", "remaining_pct": 10}, total_steps=4)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, report_to=[], use_cpu=True)
    weights_only = torch.optim.AdamW([p for n, p in model.named_parameters() if not n.endswith(".scores")])
    trainer = movprune.PruningTrainer(model=model, args=args, pruning=session, optimizers=(weights_only, None))
    with pytest.raises(movprune.PruningSessionError) as e:
        trainer.create_optimizer()
    assert "does not hold the pruner's scores" in _one_line(e)
    with_scores = movprune.PruningTrainer(model=model, args=args, pruning=session,
                                          optimizers=(torch.optim.AdamW(session.optimizer_groups()), None))
    assert with_scores.create_optimizer() is with_scores.optimizer


def test_a_bad_pruner_config_is_reported_like_a_recipes(tmp_path):
    import movprune

    with pytest.raises(movprune.RecipeError) as e:
        movprune.attach(_tiny_model(), {"method": "movment", "remaining_pct": 10}, 4)
    assert "pruner.method: unknown pruning method 'movment'" in _one_line(e) and "movement" in str(e.value)
    with pytest.raises(movprune.RecipeError) as e:
        movprune.attach(_tiny_model(), {"method": "movement"}, 4)
    assert "pruner.remaining_pct" in _one_line(e)
    with pytest.raises(movprune.RecipeError) as e:
        movprune.attach(_tiny_model(), {"method": "movement", "remaining_pct": 10}, 0)
    assert "train.max_steps: 0" in _one_line(e)
    path = tmp_path / "pruner.yaml"
    path.write_text("pruner:\n  method: l0\n  lambda_final: 3\n")  # a recipe's section, or the mapping alone
    config = movprune.load_pruner_config(path)
    assert (config.method, config.remaining_pct, config.lambda_final) == ("l0", None, 3.0)
    path.write_text("method: magnitude\nremaining_pct: 5\n")
    assert movprune.load_pruner_config(path).remaining_pct == 5.0


def test_save_refuses_to_overwrite_a_finished_run(tmp_path):
    import movprune
    from movprune.errors import ResultExistsError
    from movprune.models import resolve_model

    tokenizer = resolve_model("tiny-random-bert").tokenizer()
    for attempt in range(2):
        session = movprune.attach(_tiny_model(), {"method": "magnitude", "remaining_pct": 10}, total_steps=0)
        if attempt == 0:
            result = session.save(tmp_path / "run", tokenizer, task="sst2", metrics={"accuracy": 50.0}, seed=0)
            assert result.remaining_pct == pytest.approx(10.0, abs=0.01) and result.steps == 0
        else:
            with pytest.raises(ResultExistsError):
                session.save(tmp_path / "run", tokenizer, task="sst2", metrics={"accuracy": 50.0}, seed=0)


def test_distillation_helper_is_the_loops_loss():
    import movprune
    from movprune.training.distill.loss import kl_divergence

    student, teacher, task_loss = torch.randn(4, 3), torch.randn(4, 3), torch.tensor(0.7)
    combined = movprune.with_distillation(task_loss, student, teacher, alpha_ce=0.25, alpha_distil=0.75,
                                          temperature=2.0)
    assert torch.allclose(combined, 0.25 * task_loss + 0.75 * kl_divergence(student, teacher, 2.0))


def test_import_movprune_imports_neither_the_cli_nor_torch():
    code = ("import sys, movprune\n"
            "def heavy(): return sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'typer', 'transformers') or m.startswith('movprune.'))\n"
            "print(heavy())\n"
            "movprune.attach\n"
            "print([m for m in heavy() if m.startswith(('typer', 'movprune.cli'))])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.split("\n")[:2] == ["[]", "[]"]


def test_hf_trainer_example_under_torchrun_reaches_the_target_with_equal_masks_and_is_inspected_and_exported(tmp_path):
    """The Trainer example as ``torchrun --nproc_per_node 2`` starts it (on CPU: gloo)."""
    out = tmp_path / "trainer-run"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "examples/hf_trainer.py", "--model", "tiny-random-bert", "--data-dir", str(TINY_GLUE_DIR),
         "--output-dir", str(out), "--batch-size", "8", "--lr", "1e-3", "--method", "movement",
         "--remaining-pct", "10", "--max-steps", "8", "--save-steps", "4"],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    errors = [line for line in done.stderr.splitlines() if "Error" in line or "error" in line]
    assert done.returncode == 0, "\n".join(errors[-20:]) + "\n" + done.stderr[-3000:]
    result = _check_run_folder(out, 10.0, tmp_path)
    assert result["num_processes"] == 2 and result["steps"] == 8
    digests = result["mask_sha256_by_process"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # Every matrix keeps round(10% of its entries): local top-k at the cubic schedule's last value.
    assert result["remaining_pct"] == pytest.approx(10.0, abs=0.01)
    assert all(v == pytest.approx(10.0, abs=0.1) for v in result["remaining_by_module"].values())
    assert sorted(p.name for p in (tmp_path / "trainer-run-checkpoints").iterdir()) == ["checkpoint-4", "checkpoint-8"]


def test_the_code_in_docs_library_is_taken_from_the_tested_examples():
    """Every Python block of docs/library.md is a verbatim run of lines of an example the tests above run."""
    import re

    examples = {name: (REPO / "examples" / f"{name}.py").read_text() for name in ("own_loop", "hf_trainer")}
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "library.md").read_text(), re.S)
    assert len(blocks) >= 2
    for block in blocks:
        assert any(block in text for text in examples.values()), f"not in an example:\n{block}"


def test_trainer_with_a_teacher_adds_the_distillation_term_and_the_penalty(tmp_path):
    import copy

    from transformers import TrainingArguments

    import movprune

    student = _tiny_model()
    teacher = copy.deepcopy(student)
    torch.nn.init.normal_(teacher.classifier.weight)  # a teacher that disagrees with the student
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=10, report_to=[], use_cpu=True)
    trainer = movprune.PruningTrainer(model=student, args=args, teacher=teacher,
                                      distillation={"alpha_ce": 0.25, "alpha_distil": 0.75, "temperature": 3.0},
                                      pruning={"method": "soft_movement", "lambda_final": 400.0})
    g = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(1000, 2000, (4, 9), generator=g),
              "attention_mask": torch.ones(4, 9, dtype=torch.long), "labels": torch.tensor([0, 1, 1, 0])}
    trainer.pruning.before_forward(5)  # inside λ's ramp: the penalty weighs something
    with torch.no_grad():
        student.eval()
        plain = trainer.compute_loss(student, inputs)  # evaluation: the task loss alone
        assert torch.allclose(plain, student(**inputs).loss)
        student.train()
        torch.manual_seed(1)  # the same dropout in both training-mode forward passes
        combined = trainer.compute_loss(student, inputs)
        torch.manual_seed(1)
        out, teacher_out = student(**inputs), teacher(**inputs)
    lam = trainer.pruning.pruner.lambda_value
    assert 0 < lam < 400.0
    # Every score starts at 0: sigmoid 0.5 in every matrix, so the penalty is λ * 0.5.
    penalty = lam * 0.5
    distilled = movprune.with_distillation(out.loss, out.logits, teacher_out.logits, alpha_ce=0.25,
                                           alpha_distil=0.75, temperature=3.0)
    assert float(combined - distilled) == pytest.approx(penalty, rel=1e-5)
    assert not torch.allclose(combined, out.loss + penalty)


def test_a_library_folder_shares_a_cell_with_movprune_runs_only_when_its_recorded_settings_say_so(tmp_path):
    """A library run's recipe.yaml records what its user gave; a setting it lacks is unknown, not the
    default: compare keeps it apart from a `movprune run` run unless every setting is recorded and
    equal, and a sweep or a resume does not take it as a recipe movprune trained with."""
    import json

    import movprune
    from movprune import identity
    from movprune.errors import RecipeError
    from movprune.experiments.compare.variants import split_by_settings
    from movprune.library.save import recipe_record
    from movprune.recipe import Recipe

    pruner = {"method": "movement", "remaining_pct": 10}
    run_recipe = Recipe.model_validate({"task": "sst2", "model": "tiny-random-bert", "seed": 42, "pruner": pruner,
                                        "train": {"max_steps": 8, "lr": 1e-3, "batch_size": 16}})

    def folder(name: str, recipe_text: str, source: str | None) -> dict:
        path = tmp_path / name
        path.mkdir()
        (path / "recipe.yaml").write_text(recipe_text)
        result = {"name": name, "steps": 8, "num_processes": 1, **({"source": source} if source else {})}
        (path / "result.json").write_text(json.dumps(result))
        return {**result, "run_dir": str(path)}

    session = movprune.PruningSession(pruner, total_steps=8)
    run = folder("run", yaml.safe_dump(run_recipe.model_dump(mode="json")), None)
    partial = folder("partial", recipe_record(session, name="partial", task="sst2", model_name="tiny-random-bert",
                                              seed=42, train_settings={"lr": 1e-3, "batch_size": 16}), "library")
    every = {k: v for k, v in run_recipe.train.model_dump(mode="json").items() if k != "max_steps"}
    full = folder("full", recipe_record(session, name="full", task="sst2", model_name="tiny-random-bert", seed=42,
                                        train_settings=every), "library")
    differing, groups = split_by_settings([run, partial])
    assert len(groups) == 2 and "train.bf16" in differing and "train.lr" not in differing
    assert dict(next(axes for axes, members in groups if members == [partial]))["train.bf16"] is None
    assert identity.recorded_settings(partial["run_dir"])["train.lr"] == 1e-3
    # Every train setting recorded: what remains unknown is the data the user's loop trained on.
    differing, groups = split_by_settings([run, full])
    assert differing == ["train_split"] and len(groups) == 2
    # Two library runs recording the same settings (another seed) share a cell.
    again = folder("again", recipe_record(session, name="again", task="sst2", model_name="tiny-random-bert",
                                          seed=7, train_settings={"lr": 1e-3, "batch_size": 16}), "library")
    _, groups = split_by_settings([run, partial, again])
    assert sorted(len(members) for _, members in groups) == [1, 2]
    assert [run] in [members for _, members in groups]
    with pytest.raises(RecipeError) as e:
        identity.load_saved_recipe(partial["run_dir"])
    assert "library API" in str(e.value)
