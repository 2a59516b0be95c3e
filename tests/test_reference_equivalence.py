"""Movement and magnitude pruning train step for step like the paper's reference implementation.

The oracle below is written from the reference code published with the paper
(huggingface/transformers, examples/research_projects/movement-pruning: ``MaskedLinear`` with
``TopKBinarizer``/``MagnitudeBinarizer``, ``schedule_threshold`` and the optimizer set-up of
``masked_run_glue.py``), as a separate model that replaces every encoder ``nn.Linear``. Both
models start from the same weights, see the same batches (dropout off) and are trained by their
own optimizer; every step the masks must be identical and at the end the weights, scores and
logits must agree. This checks together what the unit tests check one by one: the gradient that
reaches the scores, the scores' optimizer group, which matrices are pruned, the schedule (with
its warm-up boundaries) and that evaluation uses the final mask.

The one deliberate difference is the kept count: the reference keeps ``int(fraction * n)``
entries, movprune rounds to the nearest count (see ``kept_count``). The oracle uses movprune's
rounding so that the comparison can be exact; the rounding itself is tested in
``test_core_pruners.py``. Both sides use ``torch.optim.AdamW`` (the reference used transformers'
own AdamW, the same update up to where epsilon enters). The embeddings are frozen on both sides, as
the reference's README says its runs did. Clipping is set low enough to act on every step, so that
which parameters are clipped together (the scores with the weights, as in the reference) matters.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, get_linear_schedule_with_warmup

from movprune.pruners import build_pruner, pruner_config
from movprune.pruners.counting import prunable_linears
from movprune.pruners.topk import kept_count
from movprune.recipe import Recipe, TrainConfig
from movprune.training.loop import build_optimizer

STEPS, LR_WARMUP = 40, 4  # reference units: initial_warmup=1, final_warmup=2 (x warmup_steps)
LR, SCORES_LR, CLIP = 1e-3, 1e-2, 0.05


def reference_schedule_threshold(step, total_step, warmup_steps, initial_threshold, final_threshold,
                                 initial_warmup, final_warmup):
    """``schedule_threshold`` of masked_run_glue.py (its lambda part left out)."""
    if step <= initial_warmup * warmup_steps:
        return initial_threshold
    if step > (total_step - final_warmup * warmup_steps):
        return final_threshold
    spars_warmup_steps = initial_warmup * warmup_steps
    spars_schedu_steps = (final_warmup + initial_warmup) * warmup_steps
    mul_coeff = 1 - (step - spars_warmup_steps) / (total_step - spars_schedu_steps)
    return final_threshold + (initial_threshold - final_threshold) * (mul_coeff ** 3)


class ReferenceTopK(torch.autograd.Function):
    """``TopKBinarizer``: sort the scores, keep the first ``j``; gradient passed straight through."""

    @staticmethod
    def forward(ctx, inputs, threshold):
        mask = inputs.clone()
        _, idx = inputs.flatten().sort(descending=True)
        j = kept_count(threshold, inputs.numel())  # the reference: int(threshold * inputs.numel())
        flat_out = mask.flatten()
        flat_out[idx[j:]] = 0
        flat_out[idx[:j]] = 1
        return flat_out.view_as(inputs)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, None


class ReferenceMaskedLinear(nn.Linear):
    """``MaskedLinear`` of emmental: ``F.linear(x, mask * W, b)``; scores start at a constant 0."""

    def __init__(self, linear: nn.Linear, method: str):
        super().__init__(linear.in_features, linear.out_features)
        self.weight.data.copy_(linear.weight.data)
        self.bias.data.copy_(linear.bias.data)
        self.method = method
        self.threshold = 1.0
        if method == "movement":
            self.mask_scores = nn.Parameter(torch.zeros_like(self.weight))

    def forward(self, x):
        if self.method == "movement":
            mask = ReferenceTopK.apply(self.mask_scores, self.threshold)
        else:  # MagnitudeBinarizer: top-k of |W|, no gradient through the mask
            with torch.no_grad():
                mask = ReferenceTopK.apply(self.weight.abs(), self.threshold)
        return nn.functional.linear(x, mask * self.weight, self.bias)


def _tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=32, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=2)
    return BertForSequenceClassification(config)


def _reference_model(model: nn.Module, method: str) -> nn.Module:
    ref = copy.deepcopy(model)
    for name, linear in prunable_linears(ref).items():
        parent_name, _, child = name.rpartition(".")
        setattr(ref.get_submodule(parent_name), child, ReferenceMaskedLinear(linear, method))
    return ref


def _reference_optimizer(model: nn.Module, weight_decay: float):
    """masked_run_glue.py: scores at their own learning rate and the optimizer's default weight
    decay (0); weights with ``weight_decay`` except biases and LayerNorm weights."""
    no_decay = ["bias", "LayerNorm.weight"]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if "mask_score" in n], "lr": SCORES_LR},
        {"params": [p for n, p in named if "mask_score" not in n and not any(nd in n for nd in no_decay)],
         "lr": LR, "weight_decay": weight_decay},
        {"params": [p for n, p in named if "mask_score" not in n and any(nd in n for nd in no_decay)],
         "lr": LR, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=LR, weight_decay=0.0)


def _batches(n: int):
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        yield {"input_ids": torch.randint(0, 64, (8, 12), generator=g),
               "attention_mask": torch.ones(8, 12, dtype=torch.long),
               "labels": torch.randint(0, 2, (8,), generator=g)}


def _masks_of_reference(ref: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, layer in prunable_linears(ref).items():
        values = layer.mask_scores if layer.method == "movement" else layer.weight.abs()
        out[name] = ReferenceTopK.apply(values.detach(), layer.threshold)
    return out


@pytest.mark.parametrize("method, weight_decay", [("movement", 0.0), ("magnitude", 0.0), ("movement", 0.01)])
def test_training_matches_the_reference_implementation_step_for_step(method, weight_decay):
    ours = _tiny_bert()
    ours.base_model.embeddings.requires_grad_(False)  # the paper freezes the embeddings
    ref = _reference_model(ours, method)

    config = pruner_config(method=method, remaining_pct=10, initial_warmup=LR_WARMUP / STEPS,
                          final_warmup=2 * LR_WARMUP / STEPS,
                          **({"scores_lr": SCORES_LR, "scores_init": 0.0} if method == "movement" else {}))
    recipe = Recipe(task="sst2", pruner=config, train=TrainConfig(lr=LR, lr_warmup_fraction=LR_WARMUP / STEPS,
                                                                  weight_decay=weight_decay))
    pruner = build_pruner(config, STEPS)
    pruner.attach(ours)
    opt = build_optimizer(ours, pruner, recipe.train)
    sched = get_linear_schedule_with_warmup(opt, LR_WARMUP, STEPS)
    ref_opt = _reference_optimizer(ref, weight_decay)
    ref_sched = get_linear_schedule_with_warmup(ref_opt, LR_WARMUP, STEPS)
    ours_params = [p for g in opt.param_groups for p in g["params"]]

    pruned_at_some_step, clipped_at_every_step = False, True
    for step, batch in enumerate(_batches(STEPS)):
        # The training loop's order: schedule, forward, backward, clip (scores included), step.
        pruner.step(step)
        threshold = reference_schedule_threshold(step, STEPS, LR_WARMUP, 1.0, 0.1, 1, 2)
        for layer in prunable_linears(ref).values():
            layer.threshold = threshold
        ref_masks = _masks_of_reference(ref)
        for name, mask in ref_masks.items():
            ours_mask = pruner.masks[name].hard_mask(pruner.original_weight(name))
            assert torch.equal(ours_mask, mask), f"step {step}: masks of {name} differ"
        pruned_at_some_step |= any(bool((m == 0).any()) for m in ref_masks.values())

        ours(**batch).loss.backward()
        clipped_at_every_step &= float(torch.nn.utils.clip_grad_norm_(ours_params, CLIP)) > CLIP
        opt.step(), sched.step(), opt.zero_grad()
        ref(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), CLIP)
        ref_opt.step(), ref_sched.step(), ref_opt.zero_grad()

    assert pruned_at_some_step and clipped_at_every_step
    for name, layer in prunable_linears(ref).items():
        assert torch.allclose(pruner.original_weight(name), layer.weight, atol=1e-6), name
        if method == "movement":
            assert torch.allclose(pruner.masks[name].scores, layer.mask_scores, atol=1e-6), name

    # Evaluation with the final mask (the reference passes the final threshold at evaluation).
    for layer in prunable_linears(ref).values():
        layer.threshold = 0.1
    ours.eval(), ref.eval()
    pruner.bake(ours)
    batch = next(_batches(1))
    with torch.no_grad():
        assert torch.allclose(ours(**batch).logits, ref(**batch).logits, atol=1e-5)
    kept = sum(int(torch.count_nonzero(lin.weight)) for lin in prunable_linears(ours).values())
    assert kept == sum(kept_count(0.1, lin.weight.numel()) for lin in prunable_linears(ours).values())


def test_movement_masks_do_not_depend_on_the_scores_learning_rate():
    """The score gradient ``dL/dW' * W`` does not depend on the scores, and AdamW's update is
    proportional to its learning rate, so with scores starting at zero (and no weight decay on
    them) ``scores_lr`` multiplies every score by the same factor: the top-k, and with it the whole
    run, is unchanged. For hard movement pruning the scores' learning rate is not a knob. (A power
    of two keeps the scaling exact in floating point.)"""
    masks_by_lr = []
    for scores_lr in (1e-2, 4e-2):
        model = _tiny_bert()
        config = pruner_config(method="movement", remaining_pct=10, initial_warmup=0.1, final_warmup=0.2,
                              scores_lr=scores_lr, scores_init=0.0)
        recipe = Recipe(task="sst2", pruner=config, train=TrainConfig(lr=LR))
        pruner = build_pruner(config, STEPS)
        pruner.attach(model)
        opt = build_optimizer(model, pruner, recipe.train)
        sched = get_linear_schedule_with_warmup(opt, LR_WARMUP, STEPS)
        history, last_scores = [], None
        for step, batch in enumerate(_batches(STEPS)):
            pruner.step(step)
            history.append({n: m.hard.clone() for n, m in pruner.masks.items()})
            model(**batch).loss.backward()
            opt.step(), sched.step(), opt.zero_grad()
        last_scores = {n: m.scores.detach().clone() for n, m in pruner.masks.items()}
        masks_by_lr.append((history, last_scores))
    (h1, s1), (h4, s4) = masks_by_lr
    for step, (a, b) in enumerate(zip(h1, h4)):
        for name in a:
            assert torch.equal(a[name], b[name]), f"step {step}, {name}"
    for name in s1:
        assert s1[name].abs().max() > 0 and s1[name].unique().numel() > 1  # the scores did learn
        assert torch.equal(s4[name], 4 * s1[name])
