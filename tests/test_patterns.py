"""Pruning patterns (``pruner.pattern``): block masks keep exact numbers of whole blocks, hybrid masks
keep whole attention heads and FFN neurons, and 1x1 blocks are unstructured pruning exactly."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn.utils import parametrize
from transformers import BertConfig, BertForSequenceClassification

from movprune.errors import RecipeError
from movprune.pruners import build_pruner, check_config, pruner_config
from movprune.pruners.counting import prunable_linears, remaining_pct
from movprune.pruners.grouping import build_groupings
from movprune.pruners.topk import kept_count

HIDDEN, HEADS, FFN, LAYERS = 64, 4, 256, 2
HEAD = HIDDEN // HEADS
METHODS = ("magnitude", "movement", "soft_movement", "l0")
STEPS = 12


def _model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=99, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=FFN, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config)


def _pruner(model, steps: int = STEPS, **config):
    pruner = build_pruner(pruner_config(**config), steps)
    pruner.attach(model)
    return pruner


def _train(model, pruner, steps: int = STEPS, record=None) -> None:
    """A few real optimizer steps (scores with their own group), recording the masked weights."""
    groups = [{"params": [p for p in model.parameters() if all(p is not q for g in pruner.parameter_groups()
                                                                  for q in g["params"])]}]
    opt = torch.optim.AdamW(groups + [{k: v for k, v in g.items() if k != "fused"}
                                      for g in pruner.parameter_groups()], lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        ids = torch.randint(0, 99, (4, 10), generator=gen)
        pruner.step(step)
        loss = model(input_ids=ids, labels=ids[:, 0] % 2).loss
        penalty = pruner.penalty()
        if penalty is not None:
            loss = loss + penalty
        loss.backward()
        opt.step()
        opt.zero_grad()
        pruner.after_optimizer_step()
        if record is not None:
            with torch.no_grad():
                record.append({n: lin.weight.detach().clone() for n, lin in prunable_linears(model).items()})


@pytest.mark.parametrize("method", METHODS)
def test_block_1x1_is_unstructured_mask_for_mask(method):
    """Same model, batches and noise: pattern block with 1x1 blocks and pattern unstructured give
    the same masked weights at every step, the same baked model and the same remaining %."""
    runs = []
    for pattern in ({"pattern": "unstructured"}, {"pattern": "block", "block_shape": (1, 1)}):
        model = _model()
        pruner = _pruner(model, method=method, remaining_pct=30, **pattern)
        torch.manual_seed(5)  # L0's training noise, from here on the same for both
        history: list = []
        _train(model, pruner, record=history)
        model.eval()
        pruner.bake(model)
        runs.append((history, model))
    (h_a, m_a), (h_b, m_b) = runs
    for step, (a, b) in enumerate(zip(h_a, h_b)):
        for name in a:
            assert torch.equal(a[name] == 0, b[name] == 0), (step, name)
            assert torch.equal(a[name], b[name]), (step, name)
    for (name, a), b in zip(prunable_linears(m_a).items(), prunable_linears(m_b).values()):
        assert torch.equal(a.weight, b.weight), name
    assert remaining_pct(m_a) == remaining_pct(m_b)


def _blocks_kept(weight: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Per block: 1 when kept whole, 0 when zeroed whole (fails on a partly zeroed block)."""
    r, c = weight.shape[0] // rows, weight.shape[1] // cols
    nonzero = (weight != 0).reshape(r, rows, c, cols).permute(0, 2, 1, 3).reshape(r, c, -1)
    whole = nonzero.all(-1) | ~nonzero.any(-1)
    assert whole.all(), "a block is partly zero"
    return nonzero.all(-1)


@pytest.mark.parametrize("method", ["magnitude", "movement"])
@pytest.mark.parametrize("scope", ["local", "global"])
def test_block_pattern_keeps_exact_numbers_of_whole_blocks(method, scope):
    model = _model()
    pruner = _pruner(model, method=method, remaining_pct=30, pattern="block", block_shape=(16, 32), scope=scope)
    _train(model, pruner)
    model.eval()
    pruner.bake(model)
    kept = {n: _blocks_kept(lin.weight, 16, 32) for n, lin in prunable_linears(model).items()}
    if scope == "local":
        for name, k in kept.items():
            assert int(k.sum()) == kept_count(0.30, k.numel()), name
    else:
        total = sum(k.numel() for k in kept.values())
        assert sum(int(k.sum()) for k in kept.values()) == kept_count(0.30, total)
        assert len({round(float(k.float().mean()), 3) for k in kept.values()}) > 1  # not per matrix
    expected = 100.0 * sum(int(k.sum()) for k in kept.values()) * 16 * 32 / sum(
        lin.weight.numel() for lin in prunable_linears(model).values())
    assert remaining_pct(model) == pytest.approx(expected)


def _layer(model, i):
    return model.bert.encoder.layer[i]


def _heads_and_neurons(model) -> list[tuple[list[int], list[int]]]:
    """Per layer: the heads whose Q, K, V rows and output columns are all non-zero, and the
    neurons whose FFN-in row and FFN-out column are; anything else must be zero throughout."""
    found = []
    for i in range(LAYERS):
        layer = _layer(model, i)
        att = layer.attention
        heads = []
        for h in range(HEADS):
            rows = slice(h * HEAD, (h + 1) * HEAD)
            parts = [att.self.query.weight[rows], att.self.key.weight[rows], att.self.value.weight[rows],
                     att.output.dense.weight[:, rows]]
            if all(bool((p != 0).all()) for p in parts):
                heads.append(h)
            else:
                assert all(not p.any() for p in parts), f"layer {i} head {h} is partly pruned"
        ffn_in, ffn_out = layer.intermediate.dense.weight, layer.output.dense.weight
        alive_in, alive_out = (ffn_in != 0).all(1), (ffn_out != 0).all(0)
        dead_in, dead_out = ~ffn_in.any(1), ~ffn_out.any(0)
        assert bool((alive_in & alive_out | dead_in & dead_out).all()), f"layer {i}: a neuron is partly pruned"
        found.append((heads, torch.nonzero(alive_in).flatten().tolist()))
    return found


@pytest.mark.parametrize("method", METHODS)
def test_hybrid_prunes_whole_heads_and_neurons(method):
    model = _model()
    pruner = _pruner(model, method=method, remaining_pct=25, pattern="hybrid")
    _train(model, pruner)
    model.eval()
    pruner.bake(model)
    for heads, neurons in _heads_and_neurons(model):
        if method in ("magnitude", "movement"):  # local top-k: exact counts in every layer
            assert len(heads) == kept_count(0.25, HEADS) and len(neurons) == kept_count(0.25, FFN)
    # heads (4 x 16 x 64 weights) and neurons (2 x 64) are whole units, so the target is met to
    # within one head per layer (soft movement's floor keeps at least one head in each layer)
    total = sum(lin.weight.numel() for lin in prunable_linears(model).values())
    assert remaining_pct(model) == pytest.approx(25.0, abs=100 * LAYERS * 4 * HEAD * HIDDEN / total)


def test_hybrid_global_magnitude_selects_by_weights():
    model = _model()
    pruner = _pruner(model, method="magnitude", remaining_pct=40, pattern="hybrid", scope="global")
    _train(model, pruner)
    model.eval()
    pruner.bake(model)
    _heads_and_neurons(model)  # whole units
    head_weights = 4 * HEAD * HIDDEN
    assert abs(remaining_pct(model) - 40.0) <= 100 * head_weights / sum(
        lin.weight.numel() for lin in prunable_linears(model).values())


def test_block_score_gradient_is_the_blocks_summed_straight_through_gradient():
    """dL/dS_block = sum over the block of dL/dW' * W (movement's estimator, per block)."""
    model = _model()
    pruner = _pruner(model, method="movement", remaining_pct=50, pattern="block", block_shape=(16, 32),
                     initial_warmup=0.0, final_warmup=0.0, steps=2)
    pruner.step(1)
    for m in pruner.masks.values():
        m.scores.data.normal_()
    pruner.step(1)
    name = "bert.encoder.layer.0.attention.self.query"
    layer = prunable_linears(model)[name]
    ids = torch.randint(0, 99, (2, 7))
    with parametrize.cached():  # the masked weight W' the forward pass uses, computed once
        w_masked = layer.weight
        loss = model(input_ids=ids, labels=torch.tensor([0, 1])).loss
    grad_w_prime = torch.autograd.grad(loss, w_masked, retain_graph=True)[0]
    loss.backward()
    original = pruner.original_weight(name).detach()
    expected = (grad_w_prime * original).reshape(4, 16, 2, 32).sum(dim=(1, 3))
    torch.testing.assert_close(pruner.masks[name].scores.grad, expected, rtol=1e-4, atol=1e-7)


def test_pattern_settings_are_checked():
    with pytest.raises(ValueError, match="block_shape"):
        pruner_config(method="movement", remaining_pct=10, pattern="block")
    with pytest.raises(ValueError, match="pattern 'block' only"):
        pruner_config(method="movement", remaining_pct=10, pattern="hybrid", block_shape=(4, 4))
    problems = check_config(pruner_config(method="none", pattern="hybrid"))
    assert problems and "pruner.pattern" in problems[0] and "magnitude" in problems[0]
    model = _model()
    with pytest.raises(RecipeError, match="does not tile"):
        _pruner(model, method="magnitude", remaining_pct=10, pattern="block", block_shape=(24, 16))


def test_hybrid_groupings_cover_each_layer_once():
    model = _model()
    groupings = build_groupings("hybrid", prunable_linears(model), model.config)
    assert len(groupings) == 2 * LAYERS
    att, ffn = groupings[0], groupings[1]
    assert att.num_groups == HEADS and att.group_numel == 4 * HEAD * HIDDEN
    assert ffn.num_groups == FFN and ffn.group_numel == 2 * HIDDEN
    members = [m.name for g in groupings for m in g.members]
    assert sorted(members) == sorted(prunable_linears(model))


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory):
    """A real hybrid movement run of tiny-random-bert (2 layers of 4 heads, FFN 256) on SST-2, made
    by the CLI in-process."""
    import yaml
    from typer.testing import CliRunner

    from movprune.cli.main import app

    from conftest import tiny_recipe_dict

    root = tmp_path_factory.mktemp("hybrid-run")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(
        root / "results", pruner={"method": "movement", "remaining_pct": 25, "pattern": "hybrid"})))
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    return root / "results" / "tiny-sst2"


def test_inspect_shows_heads_and_neurons_left(hybrid_run):
    from typer.testing import CliRunner

    from movprune.cli.main import app
    from movprune.experiments.inspect import inspect_run

    b = inspect_run(hybrid_run)
    heads, neurons = kept_count(0.25, HEADS), kept_count(0.25, FFN)
    assert b.structure == {i: {"heads_left": heads, "heads": HEADS, "neurons_left": neurons, "neurons": FFN}
                           for i in range(LAYERS)}
    out = CliRunner().invoke(app, ["inspect", str(hybrid_run)], env={"COLUMNS": "200"}).output
    assert "heads left" in out and "neurons left" in out
    assert f"{heads}/{HEADS}" in out and f"{LAYERS * neurons}/{LAYERS * FFN}" in out


def test_compact_and_onnx_exports_of_a_hybrid_run_remove_its_heads_and_neurons(hybrid_run, tmp_path):
    """The compact export keeps exactly the heads and neurons hybrid pruning left, and both it and
    the ONNX graph (made by the CLI, timed against the dense model) give the run's logits."""
    from typer.testing import CliRunner

    from movprune.cli.main import app
    from movprune.export import export_run

    result = export_run(hybrid_run, tmp_path / "compact", "compact")
    heads, neurons = kept_count(0.25, HEADS), kept_count(0.25, FFN)
    assert result.details["heads_per_layer"] == [heads] * LAYERS
    assert result.details["intermediate_size_per_layer"] == [neurons] * LAYERS
    assert result.max_abs_diff <= 1e-4
    pytest.importorskip("onnxruntime")
    out = CliRunner().invoke(app, ["export", str(hybrid_run), "--to", str(tmp_path / "onnx"), "--format", "onnx",
                                   "--repeats", "1", "--seq-length", "16"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    info = json.loads((tmp_path / "onnx" / "movprune_export.json").read_text())
    assert info["format"] == "onnx" and info["max_abs_diff"] <= 1e-4
    assert info["details"]["heads_per_layer"] == [heads] * LAYERS
    assert "onnx" in out.output and "b32 ×" in out.output and "onnxruntime.InferenceSession" in out.output
