"""``fisher``: one-shot head and neuron pruning from the Fisher information of their masks, the mask
search under weight and FLOPs budgets, the within-layer rearrangement, the least-squares rescaling,
and the whole path through ``movprune run`` / ``inspect`` / ``export`` with ``train.max_steps: 0``."""

from __future__ import annotations

import itertools
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn.utils import parametrize

from movprune.models import tiny_config
from movprune.pruners.config import pruner_config
from movprune.pruners.counting import prunable_linears
from movprune.pruners.fisher import FisherPruner
from movprune.pruners.fisher_grads import mask_gradients
from movprune.pruners.fisher_search import Budget, pruned_objective, rearrange, search_counts
from movprune.pruners.grouping import heads_and_neurons
from movprune.pruners.rescale import NormalEquations, head_equations, neuron_equations

from conftest import run_cli

HEADS, HIDDEN, FFN, LAYERS = 4, 64, 256, 2
HEAD_WEIGHTS, NEURON_WEIGHTS = 4 * (HIDDEN // HEADS) * HIDDEN, 2 * HIDDEN
TOTAL_WEIGHTS = LAYERS * (HEADS * HEAD_WEIGHTS + FFN * NEURON_WEIGHTS)


def _tiny_model(kind: str = "bert") -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_config(kind)).eval()


def _batch(size: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 5000, (size, 12), generator=g)
    mask = torch.ones(size, 12, dtype=torch.long)
    for row in range(size):  # ragged lengths: padding must not leak into any example's gradient
        mask[row, 12 - row % 5:] = 0
    ids = ids * mask
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (size,), generator=g)}


class _ColumnMask(nn.Module):
    """Reference mask variables: ``W[:, group] * m[group]`` on a matrix's input columns."""

    def __init__(self, groups: int, width: int):
        super().__init__()
        self.m = nn.Parameter(torch.ones(groups))
        self.width = width

    def forward(self, w):
        return w * self.m.repeat_interleave(self.width)


def _attached(model, **config) -> FisherPruner:
    pruner = FisherPruner(pruner_config(method="fisher", pattern="hybrid", **config), 0)
    pruner.attach(model)
    return pruner


def test_the_fisher_of_head_and_neuron_masks_is_the_sum_of_squared_per_example_gradients():
    model = _tiny_model()
    pruner = _attached(model, remaining_pct=50)
    batches = [_batch(6, 1), _batch(5, 2)]
    grads = mask_gradients(model, pruner.groupings, prunable_linears(model), batches)

    # the reference: one example at a time, autograd through explicit mask parameters on the weights
    reference = _tiny_model()
    linears = prunable_linears(reference)
    variables = {}
    for name, g in pruner.groupings.items():
        member = g.members[3 if name.endswith("attention") else 1]
        width = member.block[1]
        mask = _ColumnMask(g.num_groups, width)
        parametrize.register_parametrization(linears[member.name], "weight", mask)
        variables[name] = mask.m
    expected = {name: [] for name in variables}
    for batch in batches:
        for row in range(len(batch["labels"])):
            one = {k: v[row:row + 1] for k, v in batch.items()}
            loss = reference(**one).loss
            for name, g in zip(variables, torch.autograd.grad(loss, list(variables.values()))):
                expected[name].append(g.double())
    assert {n: g.shape for n, g in grads.items()} == {n: (11, pruner.groupings[n].num_groups) for n in grads}
    for name in variables:
        per_example = torch.stack(expected[name])
        assert per_example.abs().max() > 0
        torch.testing.assert_close(grads[name], per_example, rtol=1e-4, atol=1e-9)
        torch.testing.assert_close(grads[name].pow(2).sum(0), per_example.pow(2).sum(0), rtol=1e-4, atol=1e-12)


def _brute_force(heads, neurons, budgets):
    best = None
    for h, n in itertools.product(range(heads.numel() + 1), range(neurons.numel() + 1)):
        if all(h * b.head_cost + n * b.neuron_cost <= b.limit for b in budgets):
            value = float(heads.sort(descending=True).values[:h].sum() + neurons.sort(descending=True).values[:n].sum())
            best = max(best or (value, h, n), (value, h, n), key=lambda t: t[0])
    return best


@pytest.mark.parametrize("seed", range(5))
def test_the_search_is_the_best_choice_within_every_budget(seed):
    g = torch.Generator().manual_seed(seed)
    heads, neurons = torch.rand(8, generator=g) * 5, torch.rand(40, generator=g)
    budgets = [Budget("weights", 64, 3, 200 + 37 * seed), Budget("flops", 90, 2, 250 + 11 * seed)]
    found = search_counts(heads, neurons, budgets)
    assert all(found.heads * b.head_cost + found.neurons * b.neuron_cost <= b.limit for b in budgets)
    value, _, _ = _brute_force(heads, neurons, budgets)
    assert found.importance == pytest.approx(value)


@pytest.mark.parametrize("remaining_pct,flops_pct", [(50, None), (30, None), (60, 40)])
def test_the_pruner_keeps_exactly_the_budgeted_heads_neurons_and_weights(remaining_pct, flops_pct):
    model = _tiny_model()
    pruner = _attached(model, remaining_pct=remaining_pct, flops_pct=flops_pct, rescale=False)
    pruner.calibrate(model, [_batch(8, 3), _batch(8, 4)])
    summary = pruner.summary()
    budget = round(remaining_pct / 100 * TOTAL_WEIGHTS)
    heads = sum(summary["heads_kept"].values())
    neurons = sum(summary["neurons_kept"].values())
    kept = heads * HEAD_WEIGHTS + neurons * NEURON_WEIGHTS
    assert summary["kept_weights"] == kept <= budget
    if flops_pct is None:  # the weights are the binding budget: less than one neuron is left over
        assert budget - kept < NEURON_WEIGHTS
    else:
        assert summary["flops_pct"] <= flops_pct
    assert pruner.current_remaining_pct() == pytest.approx(100 * kept / TOTAL_WEIGHTS)
    pruner.bake(model)
    left = heads_and_neurons({n: m.weight for n, m in prunable_linears(model).items()}, HEADS)
    assert [e["heads_left"] for e in left.values()] == list(summary["heads_kept"].values())
    assert [e["neurons_left"] for e in left.values()] == list(summary["neurons_kept"].values())


def test_rearrangement_never_increases_its_objective_and_keeps_the_count():
    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        n = 3 + trial % 12
        grads = torch.randn(20, n, generator=g, dtype=torch.float64)
        fisher = grads.T @ grads
        keep = torch.rand(n, generator=g) < 0.5
        out = rearrange(fisher, keep)
        assert int(out.sum()) == int(keep.sum())
        assert pruned_objective(fisher, out) <= pruned_objective(fisher, keep) + 1e-9


def test_rearrangement_finds_groups_that_cancel():
    # groups 0 and 1 have opposite gradients: pruned together they cost nothing, though each alone
    # is more important than group 2, which the diagonal would prune first
    grads = torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.5]], dtype=torch.float64)
    fisher = grads.T @ grads
    keep = torch.tensor([False, True, False])
    assert pruned_objective(fisher, keep) == pytest.approx(1.25)
    out = rearrange(fisher, keep)
    assert out.tolist() == [False, False, True] and pruned_objective(fisher, out) == 0


def test_the_neuron_least_squares_is_the_closed_form_solution_and_lowers_the_error():
    g = torch.Generator().manual_seed(0)
    act, w2 = torch.randn(50, 6, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g, dtype=torch.float64)
    kept = torch.tensor([True, False, True, True, False, True])
    target = act[:, kept] @ (w2[:, kept] * torch.tensor([1.5, 0.5, 1.0, 2.0], dtype=torch.float64)).T \
        + 0.1 * torch.randn(50, 4, generator=g, dtype=torch.float64)
    eq = NormalEquations(4)
    neuron_equations(eq, act[:25], w2, target[:25], kept)  # two batches of tokens
    neuron_equations(eq, act[25:], w2, target[25:], kept)
    # A: one column per kept neuron, its output a_n * W2[:, n] flattened over tokens and features
    a = torch.stack([(act[:, n:n + 1] * w2[:, n]).reshape(-1) for n in torch.nonzero(kept).reshape(-1)], 1)
    exact = torch.linalg.lstsq(a, target.reshape(-1, 1)).solution.squeeze(1)
    torch.testing.assert_close(eq.solve(0.0), exact)
    assert eq.error(exact) == pytest.approx(float((a @ exact - target.reshape(-1)).pow(2).sum()))
    ridge = eq.solve(0.1)  # damped toward 1: (A^T A + λI) s = A^T r + λ
    lam = 0.1 * float(torch.diagonal(a.T @ a).mean())
    torch.testing.assert_close(ridge, torch.linalg.solve(a.T @ a + lam * torch.eye(4, dtype=torch.float64),
                                                         a.T @ target.reshape(-1) + lam))
    assert eq.error(exact) <= eq.error(ridge) <= eq.error(torch.ones(4, dtype=torch.float64))


def test_the_head_least_squares_is_the_closed_form_solution():
    g = torch.Generator().manual_seed(1)
    ctx = torch.randn(30, 12, generator=g, dtype=torch.float64)
    w_o = torch.randn(5, 12, generator=g, dtype=torch.float64)
    kept = torch.tensor([True, False, True])
    target = torch.randn(30, 5, generator=g, dtype=torch.float64)
    eq = NormalEquations(2)
    head_equations(eq, ctx, w_o, target, 3, kept)
    a = torch.stack([(ctx[:, h * 4:(h + 1) * 4] @ w_o[:, h * 4:(h + 1) * 4].T).reshape(-1) for h in (0, 2)], 1)
    torch.testing.assert_close(eq.solve(0.0), torch.linalg.lstsq(a, target.reshape(-1, 1)).solution.squeeze(1))
    assert eq.error(eq.solve(0.0)) < eq.error(torch.ones(2, dtype=torch.float64))


def test_rescaling_lowers_every_layers_reconstruction_error_and_bakes_to_a_plain_model():
    model = _tiny_model()
    pruner = _attached(model, remaining_pct=40)
    batches = [_batch(8, 5), _batch(8, 6)]
    pruner.calibrate(model, batches)
    rows = pruner.summary()["rescale"]
    assert len(rows) == LAYERS
    for row in rows.values():
        assert row["attention_error_after"] <= row["attention_error_before"]
        assert row["ffn_error_after"] < row["ffn_error_before"]
    with torch.no_grad():
        before = model(**{k: v for k, v in batches[0].items() if k != "labels"}).logits
    pruner.bake(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(**{k: v for k, v in batches[0].items() if k != "labels"}).logits, before)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_zero_steps_prunes_inspects_and_exports_compact(write_recipe, tmp_path, kind):
    recipe = write_recipe(model=f"tiny-random-{kind}", train={"max_steps": 0},
                          pruner={"method": "fisher", "remaining_pct": 40, "calibration_samples": 64})
    out = run_cli("run", str(recipe))
    assert out.returncode == 0, out.stderr
    run_dir = tmp_path / "results" / "tiny-sst2"
    result = json.loads((run_dir / "result.json").read_text())
    summary = result["pruner_summary"]
    assert result["steps"] == 0 and summary["mask_decided_by"] == "calibration"
    assert summary["calibration_samples"] == 64 and summary["calibration_seconds"] > 0
    assert result["remaining_pct"] == pytest.approx(100 * summary["kept_weights"] / TOTAL_WEIGHTS)
    assert "mask_from_one_shot_calibration" in [w["code"] for w in result["warnings"]]
    weights = load_file(run_dir / "model" / "model.safetensors")
    linears = {k[: -len(".weight")]: v for k, v in weights.items() if k.endswith(".weight") and v.dim() == 2
               and "encoder" in k}
    left = heads_and_neurons(linears, HEADS)
    assert [e["heads_left"] for e in left.values()] == list(summary["heads_kept"].values())
    assert [e["neurons_left"] for e in left.values()] == list(summary["neurons_kept"].values())

    assert run_cli("inspect", str(run_dir)).returncode == 0
    exported = run_cli("export", str(run_dir), "--to", str(tmp_path / "exp"), "--format", "compact")
    assert exported.returncode == 0, exported.stderr
    config = json.loads(next((tmp_path / "exp").rglob("config.json")).read_text())
    assert config["num_attention_heads_per_layer"] == list(summary["heads_kept"].values())
    assert config["intermediate_size_per_layer"] == list(summary["neurons_kept"].values())


def _dense_start(write_recipe, tmp_path) -> Path:
    """A 4-step dense fine-tune of the tiny recipe, run through the CLI; its model folder."""
    dense = write_recipe(pruner={"method": "none", "remaining_pct": None}, train={"max_steps": 4}, name="dense",
                         filename="dense.yaml")
    assert run_cli("run", str(dense)).returncode == 0
    return tmp_path / "results" / "dense" / "model"


def test_from_a_finetuned_run_with_training_and_its_start_as_teacher(write_recipe, tmp_path):
    start = _dense_start(write_recipe, tmp_path)
    recipe = write_recipe(model=str(start), name="pruned", train={"max_steps": 3},
                          pruner={"method": "fisher", "remaining_pct": 50, "calibration_samples": 32},
                          distill={"teacher": str(start)})
    out = run_cli("run", str(recipe))
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "results" / "pruned" / "result.json").read_text())
    assert result["steps"] == 3 and result["distill"]
    summary = result["pruner_summary"]
    # the mask held while the weights trained: the kept heads and neurons are the calibrated ones
    weights = load_file(tmp_path / "results" / "pruned" / "model" / "model.safetensors")
    left = heads_and_neurons({k[:-7]: v for k, v in weights.items() if k.endswith(".weight") and v.dim() == 2
                              and "encoder" in k}, HEADS)
    assert [e["neurons_left"] for e in left.values()] == list(summary["neurons_kept"].values())
    assert result["remaining_pct"] == pytest.approx(100 * summary["kept_weights"] / TOTAL_WEIGHTS)


def test_the_task_head_of_a_finetuned_start_is_loaded_not_reinitialised(write_recipe, tmp_path):
    start = _dense_start(write_recipe, tmp_path)
    recipe = write_recipe(model=str(start), name="pruned", train={"max_steps": 0},
                          pruner={"method": "fisher", "remaining_pct": 60, "calibration_samples": 32})
    assert run_cli("run", str(recipe)).returncode == 0
    before = load_file(start / "model.safetensors")
    after = load_file(tmp_path / "results" / "pruned" / "model" / "model.safetensors")
    heads = [k for k in before if k.startswith("classifier.")]
    assert heads and all(torch.equal(before[k], after[k]) for k in heads)


@pytest.mark.parametrize("value,expected", [(0, "greater than 0"), (-3, "greater than 0"), ("many", "integer")])
def test_a_bad_calibration_samples_is_a_one_line_error(write_recipe, value, expected):
    recipe = write_recipe(train={"max_steps": 0},
                          pruner={"method": "fisher", "remaining_pct": 50, "calibration_samples": value})
    out = run_cli("run", str(recipe))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "calibration_samples" in out.stderr and expected in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_fisher_refuses_a_pattern_other_than_hybrid(write_recipe):
    recipe = write_recipe(train={"max_steps": 0}, pruner={"method": "fisher", "remaining_pct": 50,
                                                          "pattern": "unstructured"})
    out = run_cli("run", str(recipe), "--dry-run")
    assert out.returncode == 2 and "pattern is hybrid" in out.stderr and "Traceback" not in out.stderr


class _TermAtCalibration:
    """An observer that sends this process SIGTERM as calibration starts (what a scheduler does
    minutes into a one-shot prune)."""

    def on_phase(self, text):
        if text.startswith("calibrating"):
            os.kill(os.getpid(), signal.SIGTERM)

    def on_start(self, total_steps, run_dir): pass
    def on_step(self, step, values): pass
    def on_eval(self, step, metrics): pass


def test_sigterm_during_calibration_stops_before_the_next_batch_and_leaves_the_run_unfinished(
        write_recipe, tmp_path, monkeypatch):
    from movprune.errors import RunInterrupted
    from movprune.recipe import load_recipe
    from movprune.training import run

    seen = []
    real = mask_gradients

    def counting(model, groupings, linears, batches):
        for batch in batches:  # what the method does: one pass over the calibration batches
            seen.append(batch)
        return real(model, groupings, linears, batches)

    monkeypatch.setattr("movprune.pruners.fisher.mask_gradients", counting)
    recipe = load_recipe(write_recipe(train={"max_steps": 0},
                                      pruner={"method": "fisher", "remaining_pct": 50, "calibration_samples": 64}))
    with pytest.raises(RunInterrupted) as caught:
        run(recipe, observer=_TermAtCalibration())
    assert caught.value.exit_code == 128 + signal.SIGTERM and caught.value.checkpoint is None
    assert "during calibration" in str(caught.value)
    assert seen == []  # not one batch was computed after the signal
    run_dir = tmp_path / "results" / "tiny-sst2"
    assert not (run_dir / "result.json").exists()
    # a rerun calibrates again and finishes
    assert run(recipe).steps == 0 and (run_dir / "result.json").exists()
