"""Global selection (``pruner.scope: global``): one top-k over all pruned matrices together."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from movprune.pruners import build_pruner, pruner_config
from movprune.pruners.counting import remaining_pct
from movprune.pruners.topk import global_topk_masks, kept_count, kth_largest


@pytest.mark.parametrize("k", [0, 1, 17, 500, 999, 1000, 1336, 1337])
def test_global_topk_keeps_exactly_k_overall_and_the_largest(k):
    torch.manual_seed(0)
    imps = {"a": torch.randn(10, 30), "b": torch.randn(50, 20) * 3, "c": torch.randn(37)}
    masks = global_topk_masks(imps, k)
    assert sum(int(m.sum()) for m in masks.values()) == k
    kept = torch.cat([v[m.bool()] for v, m in zip(imps.values(), masks.values())])
    dropped = torch.cat([v[~m.bool()] for v, m in zip(imps.values(), masks.values())])
    if kept.numel() and dropped.numel():
        assert kept.min() > dropped.max()


def test_global_topk_is_exact_with_ties_across_matrices():
    imps = {"a": torch.tensor([3.0, 1.0, 1.0, 0.0]), "b": torch.tensor([[1.0, 1.0], [2.0, -1.0]])}
    for k in range(0, 9):
        masks = global_topk_masks(imps, k)
        assert sum(int(m.sum()) for m in masks.values()) == k
    masks = global_topk_masks(imps, 4)  # 3 and 2, then two of the four 1s
    assert masks["a"][0] == 1 and masks["b"][1, 0] == 1
    assert int(masks["a"][1:3].sum() + masks["b"][0].sum()) == 2


def test_kth_largest_matches_a_sort():
    torch.manual_seed(1)
    values = [torch.randn(100), torch.randn(7, 9)]
    flat = torch.cat([v.reshape(-1) for v in values]).sort(descending=True).values
    for k in (1, 2, 50, 163):
        assert kth_largest(values, k) == flat[k - 1]


def two_layer_model() -> nn.Module:
    """Two 'encoder' matrices whose weights differ in scale by 10x."""
    torch.manual_seed(0)
    model = nn.Module()
    model.base_model = nn.Module()
    model.base_model.small = nn.Linear(20, 10)
    model.base_model.large = nn.Linear(20, 30)
    with torch.no_grad():
        model.base_model.small.weight.normal_(0, 0.1)
        model.base_model.large.weight.normal_(0, 1.0)
    return model


@pytest.mark.parametrize("method", ["magnitude", "movement"])
def test_global_scope_keeps_the_exact_total_and_lets_densities_differ(method):
    model = two_layer_model()
    config = pruner_config(method=method, remaining_pct=25, scope="global")
    pruner = build_pruner(config, 10)
    pruner.attach(model)
    if method == "movement":  # scores copy |W|, so the two methods must choose alike
        for name, m in pruner.masks.items():
            m.scores.data.copy_(pruner.original_weight(name).abs())
    pruner.finalize()
    total = 200 + 600
    kept = {n: int(torch.count_nonzero(lin.weight)) for n, lin in pruner.layers.items()}
    assert sum(kept.values()) == kept_count(0.25, total)
    assert remaining_pct(model) == pytest.approx(100 * kept_count(0.25, total) / total)
    # The large-weight matrix keeps (almost) everything that is kept; a local top-k would keep 25% of each.
    assert kept["base_model.large"] / 600 > 0.3 > kept["base_model.small"] / 200
    # Whatever is kept beats whatever is dropped, across matrices.
    weights = {n: pruner.original_weight(n).detach().abs() for n in pruner.layers}
    kept_vals = torch.cat([weights[n][pruner.layers[n].weight != 0] for n in weights])
    dropped_vals = torch.cat([weights[n][pruner.layers[n].weight == 0] for n in weights])
    assert kept_vals.min() >= dropped_vals.max()


def test_local_scope_keeps_the_fraction_in_every_matrix():
    model = two_layer_model()
    pruner = build_pruner(pruner_config(method="magnitude", remaining_pct=25, scope="local"), 10)
    pruner.attach(model)
    pruner.finalize()
    assert {n: int(torch.count_nonzero(lin.weight)) for n, lin in pruner.layers.items()} == \
        {"base_model.small": 50, "base_model.large": 150}


def test_global_movement_runs_end_to_end(finished_run):
    result = json.loads((finished_run / "result.json").read_text())  # global movement, 10%
    assert result["pruner_config"]["scope"] == "global"
    assert result["remaining_pct"] == pytest.approx(10, abs=0.01)  # exact k overall
    by_module = result["remaining_by_module"].values()
    assert max(by_module) - min(by_module) > 1  # matrices end at different densities


def test_tracked_topk_stays_exact_while_values_drift_jump_and_tie():
    from movprune.pruners.topk import TrackedTopK, topk_mask

    torch.manual_seed(0)
    tracker, values = TrackedTopK(), torch.randn(300_000)
    for step in range(40):
        if step == 20:
            values = values * 10 + 3  # a jump far outside the band: the fallback must catch it
        elif step == 30:
            values = values.round()  # massive ties
        else:
            values = values + 0.01 * torch.randn_like(values)
        k = 150_000 - 3_000 * step
        mask = tracker.mask(values, k)
        assert int(mask.sum()) == k
        assert values[mask.bool()].min() >= values[~mask.bool()].max()
        if step in (5, 15, 25):  # no ties yet: the very same entries as a plain top-k
            assert torch.equal(mask.bool(), topk_mask(values, k).bool())
