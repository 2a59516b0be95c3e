"""Which weights do young movement scores pick, and what does removing them cost?

    .venv/bin/python benchmarks/movement_probe.py --dense-steps 40 --out movement_probe.json

Fine-tunes MiniLM on real SST-2 for ``--dense-steps`` steps as a ``movement`` run does before its
ramp starts (the quickstart's settings: batch 32, 64 tokens, lr 1e-4 on the schedule of a 400-step
run, i.e. 40 steps of linear warm-up then linear decay, bf16 autocast; the scores learn with their
own AdamW at ``scores_lr`` while every weight is kept; 40 dense steps are what the quickstart's
schedule gives). Alongside, it accumulates the paper's first-order score
with plain gradient descent, ``S_sgd = -sum_t lr_t * dL/dW'_t * W_t``, the quantity the paper's
analysis is written for. It then removes a fraction of every encoder matrix, chosen by each
criterion, and reports the task loss on 256 held-out training sentences (fixed), and how much the
last layer's token representations still differ from one another (mean over dimensions of the
standard deviation across tokens, relative to the unpruned model: 1.0 = as varied as before, 0 =
every token mapped to the same vector).

Criteria (each removes the same count per matrix):
  movement_lowest   the lowest movement scores (what a movement run prunes first)
  movement_highest  the highest movement scores
  sgd_lowest        the lowest gradient-descent movement scores (the paper's equation)
  random            uniformly random entries
  magnitude         the smallest |W| (what magnitude pruning prunes first)
  sensitivity_lowest    the lowest PLATON-style sensitivity (``method: sensitivity``): EMAs of
                        |W * dL/dW'| (beta1 0.85) and of its deviation (beta2 0.95), multiplied
  magnitude_init_lowest the lowest movement scores started from |W| / mean |W| of each matrix
                        (``scores_init_from: magnitude``: AdamW's update does not depend on the
                        score's value, so these are the trained scores plus that start)

Then: the movement_lowest and magnitude_init_lowest removals with the removed entries'
contribution at the dense model's input means folded into each bias (``bias_correction: true``;
does the damage come from shifted output means?), the
removal done in one matrix type at a time, and how concentrated the removed entries are in rows.

Prints JSON (and writes it to --out).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from _report import emit  # benchmarks/_report.py, beside this script


def main() -> None:
    """Train densely, remove weights by each criterion, print and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dense-steps", type=int, default=40)
    parser.add_argument("--fractions", default="0.02,0.08,0.2", help="fractions of each matrix removed")
    parser.add_argument("--data-dir", default="../shared/data/glue")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast (train and measure in fp32)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch
    from transformers import get_linear_schedule_with_warmup

    from movprune import pruners, tasks
    from movprune.models import resolve_model
    from movprune.pruners.topk import kept_count, topk_mask
    from movprune.recipe import Recipe
    from movprune.training.data import prepare_data
    from movprune.training.loop import build_optimizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    recipe = Recipe(
        task="sst2", model="minilm-l6", data_dir=args.data_dir, output_dir="/tmp/movement-probe",
        pruner={"method": "movement", "remaining_pct": 10},
        train={"max_steps": 400, "batch_size": 32, "lr": 1e-4, "max_seq_length": 64, "bf16": True})
    task = tasks.get_task("sst2")
    resolved = resolve_model(recipe.model)
    tokenizer = resolved.tokenizer()
    data = prepare_data(task, recipe, tokenizer)
    model = task.build_model(resolved)
    model.base_model.embeddings.requires_grad_(False)
    pruner = pruners.build_pruner(recipe.pruner, recipe.train.max_steps)
    pruner.attach(model)
    optimizer = build_optimizer(model, pruner, recipe.train)
    warmup_steps = round(recipe.train.lr_warmup_fraction * recipe.train.max_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, recipe.train.max_steps)
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    loader = torch.utils.data.DataLoader(data.train, batch_size=32, shuffle=True,
                                         collate_fn=task.collate(tokenizer),
                                         generator=torch.Generator().manual_seed(args.seed))
    stream = iter(loader)
    held_out = [next(stream) for _ in range(8)]
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.fp32)  # noqa: E731

    sgd_scores = {name: torch.zeros_like(m.scores) for name, m in pruner.masks.items()}
    # PLATON-style sensitivity: in the dense phase scores.grad = dL/dW' * W exactly, so |scores.grad|
    # is the per-step sensitivity |W * dL/dW'| (before clipping, as the pruner takes it).
    beta1, beta2 = 0.85, 0.95
    sens = {name: torch.zeros_like(m.scores) for name, m in pruner.masks.items()}
    unc = {name: torch.zeros_like(m.scores) for name, m in pruner.masks.items()}
    start_magnitude = {}
    for name in pruner.masks:
        w0 = pruner.original_weight(name).detach().float().abs()
        start_magnitude[name] = w0 / w0.mean()
    start = time.perf_counter()
    model.train()
    for _ in range(args.dense_steps):
        pruner.step(0)  # every weight kept, however many dense steps are asked for
        with autocast():
            loss = model(**next(stream)).loss
        loss.backward()
        lr = scheduler.get_last_lr()[0]
        for name, m in pruner.masks.items():
            sgd_scores[name] -= lr * m.scores.grad  # scores.grad = dL/dW' * W (straight-through)
            current = m.scores.grad.abs()
            sens[name].mul_(beta1).add_(current, alpha=1 - beta1)
            unc[name].mul_(beta2).add_((current - sens[name]).abs(), alpha=1 - beta2)
        torch.nn.utils.clip_grad_norm_(trainable, recipe.train.max_grad_norm)
        optimizer.step(), scheduler.step(), optimizer.zero_grad(set_to_none=True)
    train_seconds = time.perf_counter() - start
    model.eval()

    current: dict[str, torch.Tensor] = {}  # the batch being measured (for hooks that need its mask)

    @torch.no_grad()
    def measure() -> tuple[float, torch.Tensor]:
        total, spread = 0.0, []
        with autocast():
            for batch in held_out:
                current["attention_mask"] = batch["attention_mask"]
                out = model(**batch, output_hidden_states=True)
                total += float(out.loss)
                last = out.hidden_states[-1].float()[batch["attention_mask"].bool()]
                spread.append(last.std(0).mean())
        return total / len(held_out), torch.stack(spread).mean()

    def set_masks(importance) -> None:
        for name, m in pruner.masks.items():
            mask = importance(name, m) if importance else torch.ones_like(m.scores)
            m.set_hard(mask, int(torch.count_nonzero(mask)))

    set_masks(None)
    dense_loss, dense_spread = measure()
    criteria = {
        "movement_lowest": lambda name, m: m.scores.detach(),
        "movement_highest": lambda name, m: -m.scores.detach(),
        "sgd_lowest": lambda name, m: sgd_scores[name],
        "random": lambda name, m: torch.rand_like(m.scores),
        "magnitude": lambda name, m: pruner.original_weight(name).detach().abs(),
        "sensitivity_lowest": lambda name, m: sens[name] * unc[name],
        "magnitude_init_lowest": lambda name, m: m.scores.detach() + start_magnitude[name],
    }
    fractions = [float(f) for f in args.fractions.split(",")]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for label, importance in criteria.items():
        results[label] = {}
        for fraction in fractions:
            set_masks(lambda name, m, importance=importance, fraction=fraction:
                      topk_mask(importance(name, m), kept_count(1 - fraction, m.numel)))
            loss, spread = measure()
            results[label][f"{fraction:g}"] = {"loss": round(loss, 4),
                                               "token_spread_vs_dense": round(float(spread / dense_spread), 4)}
    set_masks(None)

    # Is it the mean shift? Removing a sign-coherent set of a row's entries changes that output by
    # sum_j W_ij x_j over the set, whose mean over tokens need not cancel. Folding the removed part
    # at the dense model's input means, sum_j (1 - M_ij) W_ij mu_j, into each bias keeps every
    # output's mean as it was; what is left of the damage is token-dependent.
    sums: dict[str, torch.Tensor] = {}
    tokens: dict[str, int] = {}

    def accumulate(name: str, inputs: tuple[torch.Tensor, ...]) -> None:
        real = current["attention_mask"].bool()  # padding positions are not inputs the model sees
        x = inputs[0].detach().float()[real]
        sums[name] = sums.get(name, 0) + x.sum(0)
        tokens[name] = tokens.get(name, 0) + x.shape[0]

    hooks = [lin.register_forward_hook(lambda mod, inp, out, name=name: accumulate(name, inp))
             for name, lin in pruner.layers.items()]
    measure()
    for h in hooks:
        h.remove()
    mu = {name: sums[name] / tokens[name] for name in sums}
    biases = {name: lin.bias.detach().clone() for name, lin in pruner.layers.items()}
    corrected: dict[str, dict[str, dict[str, float]]] = {}
    for label in ("movement_lowest", "magnitude_init_lowest"):
        corrected[label] = {}
        for fraction in fractions:
            set_masks(lambda name, m, label=label, fraction=fraction:
                      topk_mask(criteria[label](name, m), kept_count(1 - fraction, m.numel)))
            for name, m in pruner.masks.items():
                removed = (1 - m.hard) * pruner.original_weight(name).detach()
                pruner.layers[name].bias.data = biases[name] + removed @ mu[name]
            loss, spread = measure()
            corrected[label][f"{fraction:g}"] = {"loss": round(loss, 4),
                                                 "token_spread_vs_dense": round(float(spread / dense_spread), 4)}
            for name, lin in pruner.layers.items():
                lin.bias.data = biases[name].clone()
    mean_corrected = corrected["movement_lowest"]
    set_masks(None)

    # Which matrices does it take? The lowest-score entries of one matrix type at a time (in every
    # layer), and the rows (output features) they concentrate in.
    from movprune.experiments.inspect import MATRIX_TYPES, matrix_type

    fraction = fractions[0]
    by_type: dict[str, dict[str, float]] = {}
    for kind in MATRIX_TYPES:
        set_masks(lambda name, m, kind=kind: topk_mask(m.scores.detach(), kept_count(1 - fraction, m.numel))
                  if matrix_type(name) == kind else torch.ones_like(m.scores))
        loss, spread = measure()
        by_type[kind] = {"loss": round(loss, 4), "token_spread_vs_dense": round(float(spread / dense_spread), 4)}
    set_masks(None)
    rows: dict[str, dict[str, float]] = {}
    for name, m in pruner.masks.items():
        removed = 1 - topk_mask(m.scores.detach(), kept_count(1 - fraction, m.numel))
        per_row = removed.sum(1)
        rows[name] = {"max_row_share_removed": round(float(per_row.max() / m.scores.shape[1]), 4),
                      "rows_over_5x_average": int((per_row > 5 * per_row.mean()).sum())}

    report = {
        "benchmark": "movement_probe", "model": recipe.model, "task": "sst2",
        "dense_steps": args.dense_steps, "bf16": not args.fp32, "train_seconds": round(train_seconds, 1),
        "dense_loss": round(dense_loss, 4), "removed_fraction_per_matrix": fractions,
        "loss_after_removal": results,
        "movement_lowest_with_mean_correction": mean_corrected,
        # What each remedy's first removals cost (docs/methods.md#remedies-for-the-collapse).
        "remedies": {
            "movement (none)": results["movement_lowest"],
            "bias_correction": mean_corrected,
            "sensitivity": results["sensitivity_lowest"],
            "scores_init_from: magnitude": results["magnitude_init_lowest"],
            "scores_init_from: magnitude + bias_correction": corrected["magnitude_init_lowest"],
            "magnitude (reference)": results["magnitude"],
        },
        f"movement_lowest_{fraction:g}_one_matrix_type_at_a_time": by_type,
        f"movement_lowest_{fraction:g}_rows": rows,
        "threads": args.threads, "python": platform.python_version(), "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
