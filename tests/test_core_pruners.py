"""Magnitude and movement pruning: exact kept counts, the straight-through gradient, the schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from movprune.pruners import build_pruner, pruner_config
from movprune.pruners.counting import prunable_linears, remaining_pct
from movprune.pruners.schedule import cubic_schedule
from movprune.pruners.topk import kept_count, topk_mask

from conftest import tiny_bert


@pytest.mark.parametrize("k", [1, 7, 50, 99, 100, 64 * 48 // 3, 64 * 48 - 1, 64 * 48])
def test_topk_mask_keeps_exactly_k_largest(k):
    torch.manual_seed(0)
    scores = torch.randn(64, 48)
    mask = topk_mask(scores, k)
    assert int(mask.sum()) == k
    if 0 < k < scores.numel():
        kept_min = scores[mask.bool()].min()
        dropped_max = scores[~mask.bool()].max()
        assert kept_min > dropped_max


def test_topk_mask_is_exact_even_with_ties():
    scores = torch.zeros(10, 10)
    for k in (1, 30, 50, 51, 99):
        assert int(topk_mask(scores, k).sum()) == k


def test_kept_count_rounds_to_nearest():
    assert kept_count(0.1, 1000) == 100
    assert kept_count(0.1005, 1000) == 101  # 100.5 rounds half up
    assert kept_count(0.03, 147456) == round(0.03 * 147456)
    assert kept_count(0.0, 10) == 1  # never an empty matrix
    assert kept_count(1.0, 10) == 10


def test_prunable_linears_are_exactly_the_encoder_matrices():
    model = tiny_bert()
    names = set(prunable_linears(model))
    # 2 layers x (Q, K, V, attention output, FFN in, FFN out)
    assert len(names) == 12
    assert all(".encoder.layer." in n for n in names)
    assert not any("pooler" in n or "classifier" in n or "embeddings" in n for n in names)


@pytest.mark.parametrize("method", ["magnitude", "movement"])
@pytest.mark.parametrize("pct", [50.0, 10.0, 3.0, 0.5])
def test_final_mask_keeps_the_exact_count_per_matrix(method, pct):
    model = tiny_bert()
    pruner = build_pruner(pruner_config(method=method, remaining_pct=pct), 100)
    pruner.attach(model)
    if method == "movement":  # distinct scores, so "which" is checkable too
        for m in pruner.masks.values():
            m.scores.data.normal_()
    pruner.finalize()
    for name, layer in prunable_linears(model).items():
        n = layer.weight.numel()
        assert int(torch.count_nonzero(layer.weight)) == kept_count(pct / 100, n), name
    expected = sum(kept_count(pct / 100, lin.weight.numel()) for lin in prunable_linears(model).values())
    total = sum(lin.weight.numel() for lin in prunable_linears(model).values())
    assert remaining_pct(model) == pytest.approx(100 * expected / total)


def test_magnitude_keeps_the_largest_weights():
    model = tiny_bert()
    original = {n: lin.weight.detach().clone() for n, lin in prunable_linears(model).items()}
    pruner = build_pruner(pruner_config(method="magnitude", remaining_pct=20), 10)
    pruner.attach(model)
    pruner.finalize()
    for name, layer in prunable_linears(model).items():
        w = original[name]
        kept = layer.weight.detach() != 0
        assert torch.equal(layer.weight.detach()[kept], w[kept])
        assert w[kept].abs().min() >= w[~kept].abs().max()


def test_magnitude_pruned_weights_get_zero_gradient():
    layer = nn.Linear(20, 10)
    model = nn.Module()
    model.base_model = nn.Module()
    model.base_model.encoder = layer
    pruner = build_pruner(pruner_config(method="magnitude", remaining_pct=30), 10)
    pruner.attach(model)
    pruner.finalize()
    layer(torch.randn(4, 20)).pow(2).sum().backward()
    original = layer.parametrizations.weight.original
    pruned = layer.weight.detach() == 0
    assert torch.all(original.grad[pruned] == 0)
    assert torch.any(original.grad[~pruned] != 0)


@pytest.mark.parametrize("pct", [100.0, 40.0])
def test_movement_score_gradient_is_masked_weight_gradient_times_weight(pct):
    """dL/dS = dL/dW' * W for every entry, masked or not (straight-through top-k)."""
    torch.manual_seed(0)
    layer = nn.Linear(12, 8)
    model = nn.Module()
    model.base_model = nn.Module()
    model.base_model.encoder = layer
    pruner = build_pruner(pruner_config(method="movement", remaining_pct=pct, scores_lr=0.01, scores_init=0.0), 10)
    pruner.attach(model)
    masks = pruner.masks
    mask_module = masks["base_model.encoder"] if "base_model.encoder" in masks else next(iter(masks.values()))
    mask_module.scores.data.normal_()
    pruner.finalize()
    x = torch.randn(5, 12)
    target = torch.randn(5, 8)

    W = layer.parametrizations.weight.original
    loss = ((layer(x) - target) ** 2).sum()
    loss.backward()

    # The same loss as a function of W' = W * M, differentiated by autograd.
    M = topk_mask(mask_module.scores.detach(), mask_module.k)
    W_masked = (W.detach() * M).requires_grad_(True)
    ((x @ W_masked.T + layer.bias.detach() - target) ** 2).sum().backward()
    expected = W_masked.grad * W.detach()
    assert torch.allclose(mask_module.scores.grad, expected, atol=1e-6)
    assert torch.allclose(W.grad, W_masked.grad * M, atol=1e-6)  # dL/dW = dL/dW' * M
    if pct < 100:  # pruned entries receive score gradient too
        assert torch.any(mask_module.scores.grad[M == 0] != 0)


def test_cubic_schedule_endpoints_and_shape():
    T, ti, tf = 100, 0.1, 0.2
    f = lambda t: cubic_schedule(t, T, 1.0, 0.1, ti, tf)  # noqa: E731
    assert f(0) == 1.0 and f(9) == 1.0  # dense warmup: steps 0..9
    assert f(10) == pytest.approx(1.0)  # ramp starts at the initial value
    assert f(80) == pytest.approx(0.1) and f(99) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)
    # Cubic: v_t = v_f + (v_i - v_f)(1 - (t - t_i)/R)^3 with R = 70.
    for t in (20, 45, 70):
        assert f(t) == pytest.approx(0.1 + 0.9 * (1 - (t - 10) / 70) ** 3)
    values = [f(t) for t in range(T + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone
    # Cubic means fast early, slow late: half the ramp's steps remove 7/8 of what is removed.
    assert (1.0 - f(45)) / 0.9 == pytest.approx(1 - 0.5 ** 3)


def test_pruner_follows_schedule_during_training():
    model = tiny_bert()
    pruner = build_pruner(pruner_config(method="movement", remaining_pct=10, scores_lr=0.01, scores_init=0.0), 100)
    pruner.attach(model)
    for step, expected in ((0, 100.0), (45, 100 * cubic_schedule(45, 100, 1.0, 0.1, 0.1, 0.2)), (90, 10.0)):
        pruner.step(step)
        assert pruner.current_remaining_pct() == pytest.approx(expected, abs=0.05)
        assert remaining_pct(model) == pytest.approx(expected, abs=0.05)


def test_bake_leaves_an_ordinary_linear_with_masked_weights():
    model = tiny_bert()
    pruner = build_pruner(pruner_config(method="magnitude", remaining_pct=25), 10)
    pruner.attach(model)
    pruner.finalize()
    before = {n: lin.weight.detach().clone() for n, lin in prunable_linears(model).items()}
    pruner.bake(model)
    for name, layer in prunable_linears(model).items():
        assert type(layer) is nn.Linear  # parametrization removed
        assert torch.equal(layer.weight.detach(), before[name])
    assert remaining_pct(model) == pytest.approx(25, abs=0.01)
    assert not any("parametrizations" in k for k in model.state_dict())


def test_minilm_has_the_papers_36_matrices_and_weight_count():
    """METHOD.md: MiniLM-L6-H384 has 36 pruned matrices, 10,616,832 encoder Linear weights."""
    from transformers import AutoModelForSequenceClassification

    from movprune.models import resolve_model

    model = resolve_model("minilm-l6").instantiate(AutoModelForSequenceClassification, num_labels=2)
    linears = prunable_linears(model)
    assert len(linears) == 36
    assert sum(lin.weight.numel() for lin in linears.values()) == 10_616_832
