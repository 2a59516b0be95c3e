"""The check's correctness parts, run in one child process of ``run`` (through the movprune library):

* ``recipes``: a tiny recipe of every registered method, unstructured and (where the method shapes
  masks) hybrid, with bf16; each must reach its target to within its pattern's granularity;
* ``resume``: runs killed after a checkpoint and resumed equal the uninterrupted runs (masks, metrics);
* ``exports``: the compact and ONNX exports of a run trained here give that run's logits, computed
  on this process's device.

Each part has a deadline; a run not started by it is listed in ``skipped_for_time``. The parts'
results are written to ``--out`` after every run, so a process killed at its deadline leaves what
it finished.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path
from typing import Any

#: Targets of the tiny recipes: the tiny model's 4 heads and 256 neurons per layer keep whole units at 25%.
TARGETS = {"unstructured": 10.0, "hybrid": 25.0}
#: Largest |logit difference| between an export (CPU) and the run's model on the device.
LOGITS_TOLERANCE = 1e-3


class _Killed(BaseException):
    """Raised out of the loop from the observer: no handler of the run sees it, as with SIGKILL."""


class _KillAt:
    """An observer that kills the run when it logs ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_phase(self, text: str) -> None:
        pass

    def on_start(self, total_steps: int, run_dir: Path) -> None:
        pass

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_step(self, step: int, values: dict[str, float]) -> None:
        if step == self.step:
            raise _Killed


def tiny_recipe(model: str, data_dir: str, output_dir: Path, name: str, pruner: dict, **train: Any) -> dict:
    """A seconds-long recipe (SST-2, bf16) of ``model`` on ``data_dir``."""
    return {"name": name, "task": "sst2", "model": model, "data_dir": data_dir, "seed": 0,
            "output_dir": str(output_dir), "pruner": pruner,
            "train": {"max_steps": 24, "batch_size": 16, "lr": 1e-3, "max_seq_length": 32, "max_train_samples": 256,
                      "max_eval_samples": 64, "log_every_steps": 4, "bf16": True, **train}}


def new_part(budget: float) -> dict:
    """A part's record before it runs."""
    return {"status": "ok", "seconds": 0.0, "budget_seconds": budget, "skipped_for_time": [], "error": None}


def error_text(e: BaseException) -> str:
    """The exception's last line and where it was raised (the report holds text, not objects)."""
    frames = traceback.extract_tb(e.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(e).__name__}: {e}{where}"[:2000]


def granularity_pct(run_dir: Path, pattern: str) -> float:
    """100 × (one group per grouping, in weights) / encoder weights: how far a count rounded to
    whole groups can be from the target (whole weights when unstructured, whole heads and neurons
    when hybrid)."""
    from transformers import AutoModelForSequenceClassification

    from movprune.pruners.counting import prunable_linears
    from movprune.pruners.grouping import build_groupings

    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    linears = prunable_linears(model)
    total = sum(lin.weight.numel() for lin in linears.values())
    return 100.0 * sum(g.group_numel for g in build_groupings(pattern, linears, model.config)) / total


def accepts_pattern(method: str, pattern: str) -> bool:
    """Whether ``method`` takes ``pattern`` (fisher is hybrid only; dense and sensitivity have no group masks)."""
    from pydantic import ValidationError

    from movprune import pruners

    for target in ({"remaining_pct": 10}, {}):  # dense fine-tuning takes no target
        try:
            if not pruners.check_config(pruners.pruner_config(method=method, pattern=pattern, **target)):
                return True
        except ValidationError:
            continue
    return False


def part_recipes(args, out: Path, part: dict, save) -> None:
    from movprune import pruners
    from movprune.errors import RecipeError
    from movprune.recipe import validate_recipe
    from movprune.training import run

    for method in pruners.method_names():
        for pattern, target in TARGETS.items():
            if not accepts_pattern(method, pattern):
                continue
            label = f"{method}/{pattern}"
            entry: dict[str, Any] = {"method": method, "pattern": pattern, "status": "ok", "error": None}
            data = tiny_recipe(args.model, args.data, out / "recipes", label.replace("/", "-"),
                               {"method": method, "pattern": pattern, "remaining_pct": target}, max_steps=args.steps)
            if time.time() > args.part_deadline:
                part["skipped_for_time"].append(label)
                continue
            try:
                try:
                    recipe = validate_recipe(data, label)
                except RecipeError as e:  # a method that keeps every weight takes no target
                    if "remaining_pct" not in str(e):
                        raise
                    del data["pruner"]["remaining_pct"]
                    recipe = validate_recipe(data, label)
                result = run(recipe, force=True)
                # A method without a target keeps every weight (its target_remaining_pct is 100).
                expected = result.target_remaining_pct if result.target_remaining_pct is not None else 100.0
                tolerance = granularity_pct(Path(result.run_dir), pattern)
                entry.update(target_remaining_pct=result.target_remaining_pct, remaining_pct=result.remaining_pct,
                             abs_error_pct=abs(result.remaining_pct - expected), tolerance_pct=tolerance,
                             steps=result.steps, train_seconds=result.train_seconds, bf16=result.bf16,
                             accuracy=result.metrics.get("accuracy"), pruner_summary=result.pruner_summary)
                if entry["abs_error_pct"] > tolerance:
                    entry["status"] = "failed"
            except Exception as e:
                entry.update(status="error", error=error_text(e))
            part["runs"].append(entry)
            save()


def _weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model" / "model.safetensors"))


def compare_runs(a: Path, b: Path) -> dict[str, Any]:
    """Masks (zero patterns), largest weight difference and metrics of two finished runs."""
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    wa, wb = _weights(a), _weights(b)
    masks = wa.keys() == wb.keys() and all(bool(((wa[k] == 0) == (wb[k] == 0)).all()) for k in wa)
    diff = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa) if wa.keys() == wb.keys() else None
    return {"masks_equal": masks, "max_weight_diff": diff,
            "metrics_equal": ra["metrics"] == rb["metrics"] and ra["remaining_pct"] == rb["remaining_pct"]
            and ra["mask_sha256_by_process"] == rb["mask_sha256_by_process"]}


def part_resume(args, out: Path, part: dict, save) -> None:
    from movprune.recipe import validate_recipe
    from movprune.training import checkpoint, run

    # 16 steps, checkpoints every 4, killed when step 9 is logged (the logging window part full,
    # mid-ramp): resumed from step 8. Soft movement's controller and L0's random gates are state too.
    long = {"max_steps": 16, "max_train_samples": 96, "max_eval_samples": 32, "log_every_steps": 3,
            "save_every_steps": 4, "keep_checkpoints": 2}
    for method in args.resume_methods.split(","):
        if time.time() > args.part_deadline:
            part["skipped_for_time"].append(method)
            continue
        entry: dict[str, Any] = {"method": method, "status": "ok", "error": None}
        try:
            pruner = {"method": method, "remaining_pct": 10}
            ref = validate_recipe(tiny_recipe(args.model, args.data, out / "resume", f"ref-{method}", pruner,
                                              **long), method)
            killed = validate_recipe(tiny_recipe(args.model, args.data, out / "resume", f"killed-{method}", pruner,
                                                 **long), method)
            run(ref, force=True)
            try:
                run(killed, force=True, observer=_KillAt(9))
                raise RuntimeError("the run was not killed at step 9")
            except _Killed:
                pass
            kept = checkpoint.checkpoints(killed.run_dir)
            entry["resumed_from_step"] = kept[-1][0] if kept else None
            run(killed, resume=True)
            entry.update(compare_runs(ref.run_dir, killed.run_dir))
            if not (entry["masks_equal"] and entry["metrics_equal"]):
                entry["status"] = "failed"
        except Exception as e:
            entry.update(status="error", error=error_text(e))
        part["runs"].append(entry)
        save()


def _logits(model, batches, device: str):
    import torch

    model = model.to(device) if hasattr(model, "to") else model
    with torch.inference_mode():
        return torch.cat([model(**{k: v.to(device) for k, v in b.items()})["logits"].float().cpu() for b in batches])


def part_exports(args, out: Path, part: dict, save) -> None:
    """Compact and ONNX exports of a hybrid movement run trained on this process's device."""
    from accelerate import PartialState

    from movprune.export import bench, export_run, load_export
    from movprune.export.api import load_run_model
    from movprune.recipe import validate_recipe
    from movprune.training import run

    device = str(PartialState().device)
    recipe = validate_recipe(tiny_recipe(args.model, args.data, out / "exports", "hybrid-movement",
                                         {"method": "movement", "remaining_pct": 25, "pattern": "hybrid"},
                                         max_steps=args.steps), "exports")
    run(recipe, force=True)
    part["run"] = str(recipe.run_dir)
    model, tokenizer, _ = load_run_model(recipe.run_dir)
    texts = bench.read_sentences(Path(args.data) / "SST-2" / "dev.tsv", limit=64)
    batches = bench.text_batches(tokenizer, texts, 16, 32)
    reference = _logits(model, batches, device)
    for fmt in ("compact", "onnx"):
        if time.time() > args.part_deadline:
            part["skipped_for_time"].append(fmt)
            continue
        entry: dict[str, Any] = {"format": fmt, "status": "ok", "error": None}
        try:
            folder = out / "exports" / fmt
            result = export_run(recipe.run_dir, folder, fmt, force=True)
            logits = _logits(load_export(folder), batches, "cpu")
            entry.update(exporter_max_abs_diff=result.max_abs_diff,
                         max_abs_diff_to_run_logits=float((logits - reference).abs().max()),
                         predictions_agree=bool((logits.argmax(-1) == reference.argmax(-1)).all()),
                         details=result.details)
            if entry["max_abs_diff_to_run_logits"] > LOGITS_TOLERANCE or not entry["predictions_agree"]:
                entry["status"] = "failed"
        except Exception as e:
            entry.update(status="error", error=error_text(e))
        part["formats"].append(entry)
        save()


PARTS = {"recipes": (part_recipes, {"runs": []}), "resume": (part_resume, {"runs": []}),
         "exports": (part_exports, {"run": None, "formats": []})}


def conclude(part: dict, items: list[dict]) -> None:
    """The part's status from its entries: failed or error when one is; skipped when time ran out."""
    statuses = {e["status"] for e in items}
    if part["status"] == "error":
        return
    if "error" in statuses or "failed" in statuses:
        part["status"] = "failed"
    elif part["skipped_for_time"] and not items:
        part["status"] = "skipped_for_time"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check checks")
    parser.add_argument("--work", type=Path, required=True, help="folder for the runs")
    parser.add_argument("--model", required=True, help="the tiny model (alias or folder)")
    parser.add_argument("--data", required=True, help="GLUE folder holding SST-2/")
    parser.add_argument("--steps", type=int, default=24, help="training steps of each tiny recipe")
    parser.add_argument("--out", type=Path, required=True, help="JSON file of the parts' results")
    parser.add_argument("--budgets", default="120,60,60", help="seconds for recipes, resume, exports")
    parser.add_argument("--resume-methods", default="movement,soft_movement,l0", help="methods killed and resumed")
    args = parser.parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import torch
    from accelerate import PartialState

    device = str(PartialState().device)  # where the runs train: accelerate's choice, as in every run
    budgets = dict(zip(PARTS, (float(b) for b in args.budgets.split(","))))
    results: dict[str, dict] = {}

    def save() -> None:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(args.out)

    for name, (function, fields) in PARTS.items():
        part = {**new_part(budgets[name]), **json.loads(json.dumps(fields))}
        results[name] = part
        start = time.time()
        args.part_deadline = start + budgets[name]
        try:
            function(args, args.work, part, save)
        except Exception as e:
            part.update(status="error", error=error_text(e))
        part["seconds"] = round(time.time() - start, 2)
        part["device"] = device
        if torch.cuda.is_available():  # evidence that the runs used the GPU
            part["cuda_peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            torch.cuda.reset_peak_memory_stats()
        conclude(part, part.get("runs", part.get("formats", [])))
        save()
    return 0
