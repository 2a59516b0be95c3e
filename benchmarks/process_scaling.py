"""One training run on 2 CPU processes (torchrun, gloo) against the same run on 1 process.

    .venv/bin/python benchmarks/process_scaling.py --out process_scaling.json

Runs ``movprune run`` on the same recipe (the quickstart's MiniLM soft-movement recipe, shortened
with ``--steps``; same global batch) once on one process and once under ``torchrun --standalone
--nproc_per_node 2``, with the machine's cores shared equally: the 1-process run gets all of them as
torch threads, each of the 2 processes half. Reports, per process count, the median step time and
throughput (samples/s) over the logged windows after the first (the first holds warm-up), the whole
training time, and the 2-process speed-up. Both runs are the same experiment (same learning rate at
every step, same global batches), so the final metric and remaining % are reported too. Prints
JSON (and writes it to --out). On a shared machine, compare runs made at the same load
(``loadavg`` is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _report import emit  # benchmarks/_report.py, beside this script

REPO = Path(__file__).resolve().parents[1]


def one_run(recipe: str, processes: int, steps: int, log_every: int, output_dir: Path,
            threads: int, extra: list[str]) -> dict:
    """Train ``recipe`` on ``processes`` processes; the timing and outcome of that run."""
    name = f"bench-{processes}p"
    overrides = [f"train.max_steps={steps}", f"train.log_every_steps={log_every}", f"name={name}",
                 f"output_dir={output_dir}", *extra]
    launcher = ([sys.executable, "-m", "movprune"] if processes == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                 str(processes), "-m", "movprune"])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([*launcher, "run", recipe, *overrides, "--force"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{processes}-process run failed:\n{proc.stderr[-4000:]}")
    run_dir = output_dir / name
    result = json.loads((run_dir / "result.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r["samples_per_second"] for r in records if "samples_per_second" in r][1:]
    batch_size = _batch_size(run_dir)
    samples_per_second = statistics.median(windows)
    return {
        "processes": processes, "threads_per_process": threads, "steps": result["steps"],
        "global_batch_size": batch_size, "num_processes_recorded": result["num_processes"],
        "median_step_seconds": batch_size / samples_per_second,
        "median_samples_per_second": samples_per_second,
        "train_seconds": result["train_seconds"],
        "metrics": result["metrics"], "remaining_pct": result["remaining_pct"],
    }


def _batch_size(run_dir: Path) -> int:
    import yaml

    return int(yaml.safe_load((run_dir / "recipe.yaml").read_text())["train"]["batch_size"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="src/movprune/recipes/quickstart.yaml")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                        help="cores shared by the processes (1 process: all as threads)")
    parser.add_argument("--override", action="append", default=["train.max_eval_samples=128"],
                        help="extra key=value for both runs (repeatable)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    loadavg_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_run(args.recipe, n, args.steps, args.log_every, Path(tmp), max(1, args.cores // n),
                        args.override) for n in (1, 2)]
    report = {
        "benchmark": "multiprocess", "recipe": args.recipe, "overrides": args.override,
        "command": " ".join([Path(sys.executable).name, "benchmarks/process_scaling.py", *sys.argv[1:]]),
        "cores": args.cores, "machine": platform.processor() or platform.machine(),
        "loadavg_before": loadavg_before, "loadavg_after": list(os.getloadavg()),
        "runs": runs,
        "speedup_2_vs_1_processes": runs[0]["median_step_seconds"] / runs[1]["median_step_seconds"],
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
