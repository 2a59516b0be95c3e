"""Remedies for hard movement's collapse: bias correction, sensitivity (PLATON-style) scores, and
movement scores started from |W|. Hand-computed cases on small layers, exact kept counts, baking."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from movprune.pruners import BasePrunerConfig, build_pruner, check_config, pruner_config, variant_label
from movprune.pruners.bias_correction import INPUT_MEAN_DECAY
from movprune.pruners.counting import prunable_linears
from movprune.pruners.topk import kept_count, topk_mask

from conftest import tiny_bert


class Toy(nn.Module):
    """One Linear, called like a Hugging Face model (``attention_mask`` as a keyword)."""

    def __init__(self, in_features: int = 4, out_features: int = 3):
        super().__init__()
        self.lin = nn.Linear(in_features, out_features)

    def forward(self, x, attention_mask=None):
        return self.lin(x)


def _toy(seed: int = 0) -> Toy:
    torch.manual_seed(seed)
    return Toy()


def _magnitude(pct: float) -> BasePrunerConfig:
    return pruner_config(method="magnitude", remaining_pct=pct, initial_warmup=0.0, final_warmup=0.0,
                        bias_correction=True)


# -- bias correction ---------------------------------------------------------------------------

def test_bias_correction_adds_removed_contribution_at_input_mean_by_hand():
    model = _toy()
    with torch.no_grad():
        model.lin.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 0.5],
                                             [-0.1, 4.0, -0.2, 2.5],
                                             [0.3, 0.05, -5.0, 1.5]]))
        model.lin.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    pruner = build_pruner(_magnitude(50), 10)
    pruner.attach(model)
    x1 = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]]])  # token mean (2, 2, 2, 2)
    x2 = torch.tensor([[[0.0, 1.0, 0.0, -1.0], [2.0, -1.0, 4.0, 1.0]]])  # token mean (1, 0, 2, 0)
    model.train()
    model(x1)
    model(x2)
    pruner.step(10)  # the final mask: half of each matrix, the largest |W|
    # Bias-corrected EMA over the two batches (as Adam's first moment).
    b = INPUT_MEAN_DECAY
    mu = ((1 - b) * b * torch.tensor([2.0, 2, 2, 2]) + (1 - b) * torch.tensor([1.0, 0, 2, 0])) / (1 - b ** 2)
    w = pruner.original_weight("lin").detach()
    removed = [[(0, 0), (0, 3)], [(1, 0), (1, 2)], [(2, 0), (2, 1)]]  # the two smallest |W| per row
    expected = torch.tensor([0.1, -0.2, 0.3])
    for row, entries in enumerate(removed):
        expected[row] += sum(float(w[i, j]) * float(mu[j]) for i, j in entries)
    assert pruner.masks["lin"].hard.sum() == 6
    torch.testing.assert_close(model.lin.bias, expected)
    # The trained bias itself is untouched; the correction carries no gradient.
    torch.testing.assert_close(model.lin.parametrizations.bias.original, torch.tensor([0.1, -0.2, 0.3]))
    model.lin.bias.sum().backward()
    assert model.lin.parametrizations.bias.original.grad is not None
    assert pruner.original_weight("lin").grad is None


def test_bias_correction_leaves_padding_out_and_eval_does_not_move_the_mean():
    model = _toy()
    pruner = build_pruner(_magnitude(50), 10)
    pruner.attach(model)
    x = torch.randn(2, 3, 4)
    x[1, 2] = 1e4  # a padding position
    attention = torch.tensor([[1, 1, 1], [1, 1, 0]])
    model.train()
    model(x, attention_mask=attention)
    correction = model.lin.parametrizations.bias[0]
    torch.testing.assert_close(correction.input_mean, x[attention.bool()].mean(0))
    model.eval()
    model(torch.full((1, 2, 4), 7.0))
    torch.testing.assert_close(correction.input_mean, x[attention.bool()].mean(0))


def test_returning_weights_take_their_correction_with_them():
    """Movement masks change every step: the correction follows the current mask, so when every
    weight is back the bias is the trained bias exactly."""
    model = _toy()
    pruner = build_pruner(pruner_config(method="movement", remaining_pct=25, initial_warmup=0.0,
                                       final_warmup=0.0, scores_lr=0.01, scores_init=0.0,
                                       bias_correction=True), 10)
    pruner.attach(model)
    model.train()
    model(torch.randn(2, 5, 4))
    bias = model.lin.parametrizations.bias.original.detach().clone()
    pruner.step(10)
    assert not torch.equal(model.lin.bias, bias)  # 9 of 12 weights removed: a correction
    pruner.step(0)  # all 12 back (as a mask that brings weights back would)
    assert torch.equal(model.lin.bias, bias)


@pytest.mark.parametrize("method", ["movement", "sensitivity", "soft_movement", "l0"])
def test_baked_model_equals_corrected_masked_model(method):
    model = tiny_bert()
    config = pruner_config(method=method, remaining_pct=20, bias_correction=True)
    pruner = build_pruner(config, 6)
    pruner.attach(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)  # the scores are the masks' parameters
    torch.manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (4, 9))
    attention = torch.ones_like(ids)
    attention[:, 6:] = 0
    model.train()
    for step in range(6):
        pruner.step(step)
        model(input_ids=ids, attention_mask=attention, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    pruner.finalize()
    with torch.no_grad():
        corrected = model(input_ids=ids, attention_mask=attention).logits
        uncorrected_bias = {n: lin.parametrizations.bias.original.clone() for n, lin in pruner.layers.items()}
    layers = dict(pruner.layers)
    pruner.bake(model)
    for lin in layers.values():
        assert not hasattr(lin, "parametrizations")  # an ordinary Linear again
        assert type(lin.bias) is nn.Parameter
    assert any(not torch.equal(layers[n].bias, b) for n, b in uncorrected_bias.items())
    with torch.no_grad():
        baked = model(input_ids=ids, attention_mask=attention).logits
    torch.testing.assert_close(baked, corrected, rtol=0, atol=1e-6)


def test_bias_correction_is_refused_for_dense_fine_tuning():
    problems = check_config(pruner_config(method="none", bias_correction=True))
    assert len(problems) == 1 and "pruner.bias_correction" in problems[0] and "removes no weights" in problems[0]


# -- sensitivity ---------------------------------------------------------------------------------

def test_sensitivity_importance_follows_the_platon_formula_on_hand_made_gradients():
    model = _toy()
    config = pruner_config(method="sensitivity", remaining_pct=50, initial_warmup=0.5, final_warmup=0.0)
    assert (config.sensitivity_beta1, config.sensitivity_beta2) == (0.85, 0.95)
    pruner = build_pruner(config, 10)
    pruner.attach(model)
    w = pruner.original_weight("lin").detach().clone()
    torch.manual_seed(3)
    grads = [torch.randn(3, 4) for _ in range(3)]
    ibar = torch.zeros(3, 4)
    ubar = torch.zeros(3, 4)
    for step, g in enumerate(grads):
        pruner.step(step)  # dense phase: the masked weight is the weight
        (model.lin.weight * g).sum().backward()  # dL/dW' = g
        pruner.original_weight("lin").grad = None
        i_t = (w * g).abs()
        ibar = 0.85 * ibar + 0.15 * i_t
        ubar = 0.95 * ubar + 0.05 * (i_t - ibar).abs()
    torch.testing.assert_close(pruner.importances()["lin"], ibar * ubar)
    # Once pruned, a weight's |W g| is 0 (its gradient is masked): its averages only decay.
    pruner.step(10)
    hard = pruner.masks["lin"].hard.clone()
    assert hard.sum() == 6
    assert torch.equal(hard, topk_mask(ibar * ubar, 6))
    g = torch.randn(3, 4)
    (model.lin.weight * g).sum().backward()
    i_t = (w * g).abs() * hard
    ibar = 0.85 * ibar + 0.15 * i_t
    ubar = 0.95 * ubar + 0.05 * (i_t - ibar).abs()
    torch.testing.assert_close(pruner.importances()["lin"], ibar * ubar)


@pytest.mark.parametrize("scope", ["local", "global"])
@pytest.mark.parametrize("pct", [3, 10, 50])
def test_sensitivity_kept_counts_are_exact(scope, pct):
    model = tiny_bert()
    pruner = build_pruner(pruner_config(method="sensitivity", remaining_pct=pct, scope=scope), 10)
    pruner.attach(model)
    ids = torch.randint(0, model.config.vocab_size, (2, 7))
    model(input_ids=ids, labels=torch.tensor([0, 1])).loss.backward()
    pruner.finalize()
    linears = prunable_linears(model)
    total = sum(lin.weight.numel() for lin in linears.values())
    kept = sum(int(m.hard.sum()) for m in pruner.masks.values())
    if scope == "global":
        assert kept == kept_count(pct / 100, total)
    else:
        assert all(int(m.hard.sum()) == kept_count(pct / 100, m.numel) for m in pruner.masks.values())
    pruner.bake(model)
    assert sum(int(torch.count_nonzero(lin.weight)) for lin in linears.values()) <= kept


# -- movement scores started from |W| -------------------------------------------------------------

def test_magnitude_init_scores_start_at_normalised_magnitude_and_first_mask_is_magnitudes():
    model = tiny_bert()
    config = pruner_config(method="movement", remaining_pct=30, initial_warmup=0.0, final_warmup=0.0,
                          scores_lr=0.01, scores_init=0.0, scores_init_from="magnitude")
    pruner = build_pruner(config, 10)
    pruner.attach(model)
    pruner.step(10)
    for name, m in pruner.masks.items():
        w = pruner.original_weight(name).detach().abs()
        torch.testing.assert_close(m.scores.detach(), w / w.mean())
        assert torch.equal(m.hard, topk_mask(w, kept_count(0.3, w.numel())))


def test_variant_labels_keep_remedies_apart():
    assert variant_label("movement", {"scores_init_from": "constant", "bias_correction": False}) == "movement"
    assert variant_label("movement", None) == "movement"
    assert variant_label("movement", {"scores_init_from": "magnitude", "bias_correction": True}) == \
        "movement+magnitude_init+bias_correction"
    assert variant_label("magnitude", {"bias_correction": True}) == "magnitude+bias_correction"


def test_compare_gives_each_remedy_its_own_column(tmp_path):
    import json

    from movprune.experiments.compare import build_comparisons, scan_runs, to_markdown

    def write(folder: str, pruner: str, accuracy: float, **config) -> None:
        run = tmp_path / folder / f"{pruner}-r10-s42"
        run.mkdir(parents=True)
        run.joinpath("result.json").write_text(json.dumps({
            "name": run.name, "task": "sst2", "model": "minilm-l6", "pruner": pruner,
            "pruner_config": {"method": pruner, "remaining_pct": 10, **config}, "target_remaining_pct": 10,
            "remaining_pct": 10, "metrics": {"accuracy": accuracy}, "metric_names": ["accuracy"],
            "seed": 42, "steps": 10, "train_seconds": 1.0, "versions": {}, "distill": None}))

    write("plain", "movement", 50.9, scores_init_from="constant", bias_correction=False)
    write("bias", "movement", 54.6, scores_init_from="constant", bias_correction=True)
    write("maginit", "movement", 78.0, scores_init_from="magnitude")
    write("sens", "sensitivity", 77.8)
    write("mag", "magnitude", 76.8)
    scan = scan_runs([tmp_path])
    (comparison,) = build_comparisons(scan.results)
    assert [c.method for c in comparison.columns] == ["magnitude", "movement", "movement+bias_correction",
                                                      "movement+magnitude_init", "sensitivity"]
    cells = comparison.rows[0].cells
    assert {p.method: c.metrics["accuracy"].mean for p, c in cells.items()} == {
        "magnitude": 76.8, "movement": 50.9, "movement+bias_correction": 54.6,
        "movement+magnitude_init": 78.0, "sensitivity": 77.8}
    assert comparison.warnings == []  # no "several runs with seed 42" averaging
    assert "| 10% remaining (90% sparse) | 76.8 | 50.9 | 54.6 | **78.0** | 77.8 |" in to_markdown([comparison])
