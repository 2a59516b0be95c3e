"""The floor under masked training's overhead: the element-wise work a score-based pruner adds.

    .venv/bin/python benchmarks/score_traffic_floor.py --threads 1,2

Movement pruning keeps one fp32 score per encoder weight (MiniLM: 10.6M). However it is fused, a
training step must at least compare the scores with the cut (the new mask), apply the mask
(``W * M``), form both products of the backward pass (``dL/dW = g * M``, ``dL/dS = g * W``), take
the gradient norm over the scores' gradients too (and rescale them when clipping), and update the
scores with AdamW (fused kernel, as the loop uses). This times those passes, one kernel each, on
tensors of that size, and prints JSON. The bytes they must move at the least (a 1-byte mask; 4
bytes per fp32 read or write; AdamW reads score, gradient and two moments and writes three) are
reported beside them: ``min_bytes_per_step / (bytes/s the passes reached)`` is the floor of any
implementation, fused or not. Divide by a dense step's time (``benchmarks/train_overhead.py``)
for the lowest reachable ratio to dense.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6, help="encoder layers (MiniLM: 6)")
    parser.add_argument("--hidden", type=int, default=384, help="hidden size (MiniLM: 384, FFN 4x)")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import torch

    gen = torch.Generator().manual_seed(0)
    h = args.hidden
    # One tensor per pruned matrix, as in training (Q, K, V, attention output, FFN in, FFN out).
    shapes = [(h, h)] * 4 + [(4 * h, h), (h, 4 * h)]
    shapes = shapes * args.layers
    n = sum(a * b for a, b in shapes)
    w = [torch.randn(s, generator=gen) for s in shapes]
    mask = [(torch.rand(s, generator=gen) < 0.3).float() for s in shapes]
    grad_out = [torch.randn(s, generator=gen) for s in shapes]
    scores = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for p in scores:
        p.grad = torch.randn(p.shape, generator=gen)
    opt = torch.optim.AdamW(scores, lr=1e-2, weight_decay=0.0, fused=True)

    def passes() -> dict[str, float]:
        out = {}
        start = time.perf_counter()
        for p in scores:  # the new mask from the scores: one read, however the cut is found
            torch.ge(p.detach(), 0.1)
        out["mask from the scores (one comparison)"] = time.perf_counter() - start
        start = time.perf_counter()
        for a, m in zip(w, mask):
            torch.mul(a, m)
        out["forward W*M"] = time.perf_counter() - start
        start = time.perf_counter()
        for g, a, m in zip(grad_out, w, mask):
            torch.mul(g, m)
            torch.mul(g, a)
        out["backward g*M and g*W"] = time.perf_counter() - start
        start = time.perf_counter()
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in scores]))
        torch._foreach_mul_([p.grad for p in scores], 0.5)  # clipping rescales every gradient it saw
        out["grad norm + clip of the score gradients"] = time.perf_counter() - start
        start = time.perf_counter()
        opt.step()
        out["fused AdamW on the scores"] = time.perf_counter() - start
        return out

    # compare: S in, M out (1 B); forward: W, M in, W' out; backward: g, M, W in, gW, gS out;
    # norm + clip: gS in, gS out; AdamW: S, gS, m, v in, S, m, v out.
    bytes_per_element = (4 + 1) + (4 + 1 + 4) + (4 + 1 + 4 + 4 + 4) + (4 + 4) + (4 * 4 + 3 * 4)
    report = {"benchmark": "score_traffic_floor", "numel": n,
              "min_bytes_per_step": bytes_per_element * n, "results": {}}
    for threads in [int(t) for t in args.threads.split(",") if t]:
        torch.set_num_threads(threads)
        passes()  # warm-up (allocations, AdamW state)
        runs = [passes() for _ in range(args.repeats)]
        medians = {k: round(1000 * statistics.median(r[k] for r in runs), 2) for k in runs[0]}
        total_ms = sum(medians.values())
        report["results"][str(threads)] = {"ms": medians, "total_ms": round(total_ms, 2),
                                           "gb_per_s": round(bytes_per_element * n / total_ms / 1e6, 2),
                                           "load_average": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
