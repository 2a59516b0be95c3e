"""Soft movement and L0: penalties and gates against their formulas, the threshold schedule, the
recipe rules of the two λ modes, and (tiny-random-bert on the SST-2 fixture) the controller reaching a
requested remaining_pct and the fixed-λ mode pruning more as λ grows."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from movprune.errors import RecipeError
from movprune.pruners import BasePrunerConfig, build_pruner, pruner_config
from movprune.pruners.topk import kept_count
from movprune.recipe import validate_recipe

from conftest import tiny_recipe_dict

BETA, LEFT, RIGHT = 2.0 / 3.0, -0.1, 1.1
LN3 = math.log(3.0)


class Toy(nn.Module):
    """Two 'encoder' matrices of different sizes (4 and 8 weights)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(2, 2)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.cat([self.a(x), x], dim=-1))


def soft_config(**kw) -> BasePrunerConfig:
    base = dict(method="soft_movement", lambda_final=2.0, scores_lr=1e-2, scores_init=0.0,
                sigmoid_threshold_initial=0.0, sigmoid_threshold_final=0.1,
                initial_warmup=0.1, final_warmup=0.2)
    return pruner_config(**{**base, **kw})


def l0_config(**kw) -> BasePrunerConfig:
    base = dict(method="l0", lambda_final=3.0, scores_lr=1e-1, scores_init=math.log(9.0))
    return pruner_config(**{**base, **kw})


def attached(config: BasePrunerConfig, total_steps: int = 100, model: nn.Module | None = None):
    model = model or Toy()
    pruner = build_pruner(config, total_steps)
    pruner.attach(model)
    return model, pruner


def set_scores(pruner, values: dict[str, list]) -> None:
    with torch.no_grad():
        for name, v in values.items():
            pruner.masks[name].scores.copy_(torch.tensor(v, dtype=torch.float32))


# -- penalties ----------------------------------------------------------------------------------

def test_soft_movement_penalty_is_lambda_t_times_mean_sigmoid_averaged_over_matrices():
    _, pruner = attached(soft_config())
    # a: sigmoids .5 .75 .25 .5 (mean .5); b: every sigmoid 0.2 (mean .2)
    set_scores(pruner, {"a": [[0.0, LN3], [-LN3, 0.0]], "b": [[math.log(0.25)] * 4] * 2})
    pruner.step(100)  # τ = τ_final, so λ_t = λ_final = 2
    assert pruner.penalty().item() == pytest.approx(2.0 * (0.5 + 0.2) / 2, rel=1e-6)
    pruner.step(45)  # τ_45 = 0.1 - 0.1 * (1 - 35/70)^3 = 0.0875, λ_45 = 2 * 0.875
    penalty = pruner.penalty()
    assert penalty.item() == pytest.approx(1.75 * 0.35, rel=1e-6)
    penalty.backward()
    s = pruner.masks["a"].scores.detach()
    expected = 1.75 * torch.sigmoid(s) * (1 - torch.sigmoid(s)) / (4 * 2)
    torch.testing.assert_close(pruner.masks["a"].scores.grad, expected)


def test_l0_penalty_is_lambda_times_expected_l0_averaged_over_matrices():
    _, pruner = attached(l0_config())
    shift = BETA * math.log(-LEFT / RIGHT)  # so that σ(S - shift) = σ(x) for S = shift + x
    set_scores(pruner, {"a": [[shift, shift + LN3], [shift - LN3, shift]],
                        "b": [[shift + math.log(0.25)] * 4] * 2})
    for step in (0, 50, 100):  # fixed-λ L0: λ is constant
        pruner.step(step)
        assert pruner.penalty().item() == pytest.approx(3.0 * (0.5 + 0.2) / 2, rel=1e-6)


def test_l0_expected_l0_is_the_probability_that_a_training_gate_is_open():
    model, pruner = attached(l0_config(), model=nn.Sequential(nn.Linear(400, 250)))
    set_scores(pruner, {"0": torch.zeros(250, 400).tolist()})
    model.train()
    gates = pruner.masks["0"].mask(model[0].parametrizations.weight.original)
    expected = torch.sigmoid(torch.tensor(-BETA * math.log(-LEFT / RIGHT))).item()  # ≈ 0.832
    assert (gates > 0).float().mean().item() == pytest.approx(expected, abs=0.01)
    # hard concrete: exact zeros and exact ones both occur
    assert (gates == 0).any() and (gates == 1).any() and bool(((gates >= 0) & (gates <= 1)).all())


# -- gates and masks ----------------------------------------------------------------------------

def test_l0_gates_are_random_in_training_and_deterministic_in_eval():
    model, pruner = attached(l0_config())
    set_scores(pruner, {"a": [[-math.log(11.0), 0.0], [LN3, 10.0]]})
    layer = model.a
    model.train()
    assert not torch.equal(pruner.masks["b"].mask(model.b.weight), pruner.masks["b"].mask(model.b.weight))
    model.eval()
    w = layer.parametrizations.weight.original
    first, second = pruner.masks["a"].mask(w), pruner.masks["a"].mask(w)
    assert torch.equal(first, second)
    # clamp(σ(S)(r - l) + l, 0, 1): σ = 1/12 -> 0 (pruned), σ = .5 -> .5, σ = .75 -> .8, σ ≈ 1 -> 1
    torch.testing.assert_close(first, torch.tensor([[0.0, 0.5], [0.8, 1.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.weight, w * first)


def test_soft_movement_threshold_follows_the_cubic_schedule():
    _, pruner = attached(soft_config())
    expected = {0: 0.0, 9: 0.0, 10: 0.0, 45: 0.0875, 66: 0.1 - 0.1 * 0.2 ** 3, 80: 0.1, 100: 0.1}
    for step, tau in expected.items():
        assert pruner.sigmoid_threshold(step) == pytest.approx(tau, abs=1e-12)
        pruner.step(step)
        assert pruner.lambda_value == pytest.approx(2.0 * tau / 0.1, abs=1e-12)


def test_soft_movement_mask_is_sigmoid_above_tau_with_a_half_percent_floor():
    model, pruner = attached(soft_config(), model=nn.Sequential(nn.Linear(2, 2), nn.Linear(100, 10)))
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    set_scores(pruner, {"0": [[logit(0.05), logit(0.09)], [logit(0.2), logit(0.5)]],
                        "1": (-10.0 - torch.arange(1000.0) / 1000).reshape(10, 100).tolist()})
    pruner.step(45)  # τ = 0.0875
    assert pruner.masks["0"].hard.tolist() == [[0.0, 1.0], [1.0, 1.0]]
    pruner.step(100)  # τ = 0.1
    assert pruner.masks["0"].hard.tolist() == [[0.0, 0.0], [1.0, 1.0]]
    # every σ of matrix 1 is below τ: it keeps its top 0.5% (5 of 1000), not nothing
    hard = pruner.masks["1"].hard.reshape(-1)
    assert int(hard.sum()) == kept_count(0.005, 1000) == 5
    assert hard[:5].tolist() == [1.0] * 5
    assert pruner.current_remaining_pct() == pytest.approx(100 * (2 + 5) / 1004)


def test_soft_movement_scores_learn_straight_through_the_threshold():
    model, pruner = attached(soft_config(lambda_final=0.0))
    set_scores(pruner, {"a": [[-5.0, 1.0], [1.0, -5.0]]})
    pruner.step(100)  # two of a's entries are masked out
    x = torch.randn(3, 2)
    model(x).pow(2).sum().backward()
    # The same loss computed on W' = W * M as a leaf gives dL/dW'; then dL/dS must be dL/dW' * W.
    w = model.a.parametrizations.weight.original.detach()
    w_prime = (w * pruner.masks["a"].hard).requires_grad_(True)
    hidden = torch.nn.functional.linear(x, w_prime, model.a.bias.detach())
    (grad_w_prime,) = torch.autograd.grad(model.b(torch.cat([hidden, x], dim=-1)).pow(2).sum(), [w_prime])
    torch.testing.assert_close(pruner.masks["a"].scores.grad, grad_w_prime * w)
    assert pruner.masks["a"].scores.grad[0, 0] != 0  # masked entries learn too


# -- recipe rules -------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["soft_movement", "l0"])
def test_recipe_needs_a_target_or_a_fixed_lambda_but_not_both(tmp_path, method):
    def recipe(**pruner):
        return tiny_recipe_dict(tmp_path, pruner={"method": method, "remaining_pct": None, **pruner})

    with pytest.raises(RecipeError, match="remaining_pct.*lambda_final"):
        validate_recipe(recipe(), "r")
    with pytest.raises(RecipeError, match="not both"):
        validate_recipe(recipe(remaining_pct=10, lambda_final=100), "r")
    with pytest.raises(RecipeError, match="global by construction"):
        validate_recipe(recipe(remaining_pct=10, scope="global"), "r")
    fixed = validate_recipe(recipe(lambda_final=100), "r").pruner
    target = validate_recipe(recipe(remaining_pct=10), "r").pruner
    assert fixed.lambda_final == 100 and fixed.remaining_pct is None
    assert target.lambda_final is None and target.remaining_pct == 10  # λ is the controller's


def test_paper_defaults_are_filled_in(tmp_path):
    def resolved(**pruner):
        return validate_recipe(tiny_recipe_dict(tmp_path, pruner=pruner), "r").pruner

    soft = resolved(method="soft_movement", remaining_pct=None, lambda_final=400)
    assert (soft.scores_lr, soft.scores_init, soft.sigmoid_threshold_initial,
            soft.sigmoid_threshold_final) == (1e-2, 0.0, 0.0, 0.1)
    l0 = resolved(method="l0", remaining_pct=10)
    assert l0.scores_lr == 1e-1 and l0.scores_init == pytest.approx(math.log(0.9 / 0.1))
    assert not hasattr(l0, "sigmoid_threshold_initial") and not hasattr(l0, "sigmoid_threshold_final")


# -- end to end on tiny-random-bert + the SST-2 fixture ---------------------------------------------

def tiny_run(tmp_path, name: str, steps: int, **pruner):
    from movprune.training.loop import run

    recipe = tiny_recipe_dict(tmp_path, name=name, pruner=pruner,
                              train={"max_steps": steps, "batch_size": 8, "max_train_samples": 512,
                                     "max_eval_samples": 32, "log_every_steps": 50})
    return run(validate_recipe(recipe, name))


@pytest.mark.parametrize("method", ["soft_movement", "l0"])
def test_a_requested_remaining_pct_is_reached(tmp_path, method):
    result = tiny_run(tmp_path, method, 200, method=method, remaining_pct=10, scores_lr=0.1)
    assert result.target_remaining_pct == 10
    assert abs(result.remaining_pct - 10) <= 1
    summary = result.pruner_summary
    assert summary["lambda_mode"] == "target"
    # The controller does the work: the mask was already near the target before calibration.
    assert abs(summary["remaining_pct_before_calibration"] - 10) <= 2.5
    assert sum(result.remaining_by_module.values()) > 0


@pytest.mark.parametrize("method", ["soft_movement", "l0"])
def test_fixed_lambda_prunes_more_as_lambda_grows(tmp_path, method):
    remaining = []
    for lam in (0.1, 1.0):
        result = tiny_run(tmp_path, f"{method}-{lam}", 100, method=method, remaining_pct=None,
                          lambda_final=lam, scores_lr=0.1)
        assert result.target_remaining_pct is None
        assert result.pruner_summary == {"lambda_mode": "fixed"}
        remaining.append(result.remaining_pct)
    assert remaining[0] > 2 * remaining[1] and remaining[0] < 100


def test_l0_training_gate_gradient_matches_autograd_of_the_formula():
    from movprune.pruners.l0 import _TrainingGate

    scores = torch.linspace(-6, 6, 2001, requires_grad=True)
    torch.manual_seed(3)
    gate = _TrainingGate.apply(scores)
    upstream = torch.randn_like(gate)
    (grad,) = torch.autograd.grad((gate * upstream).sum(), scores)
    torch.manual_seed(3)  # the same noise, through the formula with plain autograd
    u = torch.empty_like(scores).uniform_(1e-6, 1 - 1e-6)
    reference = (torch.sigmoid((torch.logit(u) + scores) / BETA) * (RIGHT - LEFT) + LEFT).clamp(0, 1)
    (expected,) = torch.autograd.grad((reference * upstream).sum(), scores)
    torch.testing.assert_close(gate, reference)
    torch.testing.assert_close(grad, expected)
