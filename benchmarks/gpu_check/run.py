"""``run``: the GPU check, from the repository root, writing ``<out>/gpu_check.json`` and its log.

Setup installs ``.gpu/wheels`` into a temporary folder (``pip install --no-index --no-deps
--target``), puts it and ``src/`` first on the path of this process and of every child (movprune is
not installed there), checks the pack against its manifest, and makes the models: MiniLM back in
float32 from the packed float16 copy, and a random tiny BERT (2 layers, hidden 64) saved with
MiniLM's tokenizer. Then, each part in its own child process with its own time budget:

1. ``train_overhead``: ``benchmarks/train_overhead.py`` on the device for a random BERT-base-sized
   encoder at batch 32 x 128, every method against dense (alone on the device, since it is timed);
2. ``recipes``, ``resume``, ``exports`` (:mod:`benchmarks.gpu_check.checks`, one child), while
3. ``minilm_sst2``: ``python -m movprune run`` of MiniLM on SST-2 at 10% remaining for hard
   movement, soft movement, magnitude and sensitivity (one epoch each), and hard movement for
   ``--long-epochs``, several at once on the one device. A run still going at the deadline gets
   SIGTERM (it saves a checkpoint) and is reported with the evaluations it logged.

``--smoke`` runs the same on CPU with the tiny model on the checked-in data fixtures and a few
steps, without MiniLM or the pack. The report is rewritten after every part, so a check cut short
still leaves what it measured. Exit status: 0 when every part passed, 1 when one failed or
raised (the report says which), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import pack, schema
from .minilm import LONG_LABEL, MINILM_RUNS, MiniLMRuns, minilm_specs
from .prepare import (
    child_env,
    float32_minilm,
    install_wheels,
    tail,
    tiny_model,
    train_rows,
    unpack_sst2,
    verify_pack,
    versions,
)

REPO = Path(__file__).resolve().parents[2]
REPORT = "gpu_check.json"
LOG = "gpu_check.log"
FIXTURES = REPO / "tests" / "fixtures" / "glue"


class Mode:
    """What a mode runs: budgets (seconds) and sizes."""

    def __init__(self, smoke: bool, args):
        self.smoke = smoke
        self.budget = args.budget_s or (900.0 if smoke else 480.0)
        self.overhead_budget = 240.0 if smoke else 90.0
        self.check_budgets = (300.0, 150.0, 100.0) if smoke else (110.0, 50.0, 40.0)
        self.reserve = 20.0 if smoke else 25.0  # for SIGTERM-ed runs' checkpoints and the report
        self.parallel = args.parallel or (2 if smoke else 5)
        self.tiny_steps = 8 if smoke else 40
        #: Methods of the resume part (their state differs: scores, controller, random gates).
        self.resume_methods = "soft_movement" if smoke else "movement,soft_movement,l0"
        #: The MiniLM runs made (smoke: one plain and the longer one, each a few steps).
        self.minilm_labels = ("hard_movement", LONG_LABEL) if smoke else (*MINILM_RUNS, LONG_LABEL)
        self.device = "cpu" if smoke else "cuda"
        if smoke:
            self.overhead_args = ["--random-encoder", "tiny", "--device", "cpu", "--batch-size", "4",
                                  "--seq-length", "16", "--steps", "1", "--repeats", "1", "--warmup", "1",
                                  "--methods", "dense,movement"]
        else:
            self.overhead_args = ["--random-encoder", "bert-base", "--device", "cuda", "--batch-size", "32",
                                  "--seq-length", "128", "--steps", "5", "--repeats", "3", "--warmup", "2"]


class Log:
    """``gpu_check.log``: timestamped lines, and the output of each child process."""

    def __init__(self, path: Path, start: float):
        self.path, self.start = path, start
        path.write_text("", encoding="utf-8")

    def __call__(self, text: str) -> None:
        line = f"[{time.time() - self.start:7.1f} s] {text}"
        print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def attach(self, title: str, output: Path, lines: int = 300) -> None:
        """Append the last ``lines`` lines of a child's output file."""
        text = output.read_text(encoding="utf-8", errors="replace").splitlines() if output.exists() else []
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"----- {title} ({len(text)} lines, last {min(lines, len(text))}) -----\n")
            f.write("\n".join(text[-lines:]) + "\n----- end -----\n")


def empty_part(budget: float, **fields: Any) -> dict:
    """A part's record before (or instead of) running it."""
    return {"status": "ok", "seconds": 0.0, "budget_seconds": budget, "skipped_for_time": [], "error": None, **fields}


def summarise(report: dict) -> dict:
    """Which parts passed, failed (with the runs that did) or were cut for time."""
    summary: dict[str, list[str]] = {"ok": [], "failed": [], "skipped_for_time": []}
    for name, part in report["parts"].items():
        key = {"ok": "ok", "skipped_for_time": "skipped_for_time"}.get(part["status"], "failed")
        summary[key].append(name)
        for entry in part.get("runs", part.get("formats", [])):
            label = "/".join(str(entry[k]) for k in ("label", "method", "pattern", "format") if k in entry)
            if entry["status"] in ("failed", "error"):
                summary["failed"].append(f"{name}: {label}")
            elif entry["status"] == "skipped_for_time":
                summary["skipped_for_time"].append(f"{name}: {label}")
        summary["skipped_for_time"] += [f"{name}: {s}" for s in part["skipped_for_time"]]
    return summary


def write_report(report: dict, out: Path, start: float) -> list[str]:
    """Rewrite the report atomically, its summary and wall time updated; its schema problems."""
    report["wall_seconds"] = round(time.time() - start, 1)
    report["summary"] = summarise(report)
    problems = schema.validate(report)
    if problems:
        report["schema_problems"] = problems
    tmp = out / (REPORT + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(out / REPORT)
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check run", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.log")
    parser.add_argument("--smoke", action="store_true", help="on CPU, tiny model and data, a few steps, no pack")
    parser.add_argument("--pack", type=Path, default=REPO / ".gpu", help="the folder `pack` filled")
    parser.add_argument("--work", type=Path, help="folder for runs and models (default: a new temporary one)")
    parser.add_argument("--budget-s", type=float, help="wall-clock budget in seconds (default 480; smoke 900)")
    parser.add_argument("--parallel", type=int, help="MiniLM runs at once (default 5; smoke 2)")
    parser.add_argument("--long-epochs", type=float, default=3, help="epochs of the longer hard movement run "
                        "(1 or less: none)")
    args = parser.parse_args(argv)
    mode = Mode(args.smoke, args)
    if not mode.smoke and not (args.pack / pack.MANIFEST).is_file():
        print(f"run: {args.pack / pack.MANIFEST} not found; fill it with `make gpu-pack` and carry it "
              "(or pass --smoke)", file=sys.stderr)
        return 2
    start = time.time()
    deadline = start + mode.budget
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / LOG, start)
    log(f"gpu_check {'smoke' if mode.smoke else 'full'}: budget {mode.budget:.0f} s, work folder {work}")
    parts = {"recipes": empty_part(mode.check_budgets[0], runs=[]),
             "resume": empty_part(mode.check_budgets[1], runs=[]),
             "exports": empty_part(mode.check_budgets[2], run=None, formats=[]),
             "train_overhead": empty_part(mode.overhead_budget, command=[], report=None),
             "minilm_sst2": empty_part(0.0, runs=[])}
    report: dict[str, Any] = {
        "schema_version": schema.SCHEMA_VERSION, "mode": "smoke" if mode.smoke else "full",
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "wall_seconds": 0.0,
        "budget_seconds": mode.budget, "parts": parts,
        "environment": {"python": platform.python_version(), "platform": platform.platform(), "torch": None,
                        "cuda": None, "device": mode.device, "device_name": None, "packages": {},
                        "wheels_installed": [], "pack_verified": None}}
    env_info = report["environment"]
    try:
        site = None
        if not mode.smoke:
            bad = verify_pack(args.pack)
            env_info["pack_verified"] = not bad
            if bad:
                log(f"pack: {len(bad)} files differ from the manifest: {bad}")
            site = work / "site"
            env_info["wheels_installed"] = install_wheels(args.pack / pack.WHEELS_DIR, site)
            log(f"installed {len(env_info['wheels_installed'])} wheels into {site}")
            sys.path.insert(0, str(site))
        sys.path.insert(0, str(REPO / "src"))
        env = child_env(site, work / "cache", mode.smoke)
        if mode.smoke:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        import torch

        env_info.update(torch=torch.__version__, cuda=torch.version.cuda, packages=versions())
        if not mode.smoke:
            if not torch.cuda.is_available():
                raise RuntimeError("CUDA is not available to torch on this machine (use --smoke on CPU)")
            env_info["device_name"] = torch.cuda.get_device_name()
            minilm = work / "minilm"
            float32_minilm(args.pack / pack.MODEL_DIR, minilm)
            glue = work / "glue"
            rows = unpack_sst2(args.pack / pack.DATA_DIR, glue)
            tokenizer_dir = minilm
        else:
            from movprune.models import minilm_path

            tokenizer_dir, glue = Path(minilm_path()), FIXTURES
            rows = train_rows(glue)
        tiny = work / "tiny-bert"
        tiny_model(tokenizer_dir, tiny)
        imports = subprocess.run([sys.executable, "-c", "import datasets, pydantic, movprune.training.loop"],
                                 cwd=REPO, env=env, capture_output=True, text=True)
        if imports.returncode:  # every part needs them: say so once, plainly
            raise RuntimeError(f"a child cannot import movprune's dependencies: {imports.stderr[-1500:]}")
        log(f"models ready ({tiny}{'' if mode.smoke else ', ' + str(work / 'minilm')}); SST-2 train rows {rows}")
    except Exception as e:
        log(f"setup failed: {type(e).__name__}: {e}")
        for part in parts.values():
            part.update(status="error", error=f"setup failed: {type(e).__name__}: {e}")
        write_report(report, args.out, start)
        return 1
    write_report(report, args.out, start)

    # 1. Step times, alone on the device.
    overhead = parts["train_overhead"]
    out_json = work / "train_overhead.json"
    overhead["command"] = [sys.executable, "benchmarks/train_overhead.py", *mode.overhead_args, "--out", str(out_json)]
    t0 = time.time()
    budget = min(mode.overhead_budget, deadline - t0 - mode.reserve)
    try:
        subprocess.run(overhead["command"], cwd=REPO, env=env, stdout=open(work / "overhead.log", "w"),
                       stderr=subprocess.STDOUT, timeout=max(budget, 1), check=True)
        overhead["report"] = json.loads(out_json.read_text(encoding="utf-8"))
    except subprocess.TimeoutExpired:
        overhead.update(status="skipped_for_time", error=f"did not finish in {budget:.0f} s")
    except subprocess.CalledProcessError as e:
        overhead.update(status="error", error=f"exit {e.returncode}: {tail(work / 'overhead.log')}")
    except (OSError, ValueError) as e:  # exit 0 without a readable report: recorded, the other parts go on
        overhead.update(status="error", error=f"no readable {out_json.name} after exit 0: {e}")
    overhead["seconds"] = round(time.time() - t0, 1)
    log(f"train_overhead: {overhead['status']} in {overhead['seconds']} s")
    log.attach("train_overhead", work / "overhead.log", lines=40)
    write_report(report, args.out, start)

    # 2 and 3. The checks in one child while the MiniLM runs share the device.
    runs_deadline = deadline - mode.reserve
    parts["minilm_sst2"]["budget_seconds"] = round(max(0.0, runs_deadline - time.time()), 1)
    minilm = MiniLMRuns(minilm_specs(mode.smoke, mode.minilm_labels, args.long_epochs, work,
                                     tiny if mode.smoke else work / "minilm", glue, rows), env,
                        mode.parallel, log)
    t_runs = time.time()
    checks_json = work / "checks.json"
    checks_cmd = [sys.executable, "-m", "benchmarks.gpu_check", "checks", "--work", str(work / "checks"),
                  "--model", str(tiny), "--data", str(FIXTURES), "--steps", str(mode.tiny_steps),
                  "--out", str(checks_json), "--budgets", ",".join(f"{b:g}" for b in mode.check_budgets),
                  "--resume-methods", mode.resume_methods]
    checks_log = open(work / "checks.log", "w", encoding="utf-8")
    checks = subprocess.Popen(checks_cmd, cwd=REPO, env=env, stdout=checks_log, stderr=subprocess.STDOUT)
    checks_deadline = min(t_runs + sum(mode.check_budgets) + 30, runs_deadline)
    log(f"checks: started (pid {checks.pid}), deadline in {checks_deadline - time.time():.0f} s")
    checks_done = False
    while True:
        busy = minilm.poll(runs_deadline)
        if not checks_done and (checks.poll() is not None or time.time() > checks_deadline):
            checks_done = True
            if checks.poll() is None:
                checks.kill()
                checks.wait()
            checks_log.close()
            collect_checks(parts, checks_json, checks.returncode, work / "checks.log")
            log(f"checks: exit {checks.returncode}; " + ", ".join(f"{k} {parts[k]['status']}"
                                                                  for k in ("recipes", "resume", "exports")))
            log.attach("checks", work / "checks.log", lines=120)
            write_report(report, args.out, start)
        if not busy and checks_done:
            break
        if time.time() > runs_deadline and busy:
            minilm.stop(grace=mode.reserve - 5)
        time.sleep(0.5)
    part = parts["minilm_sst2"]
    part["runs"] = sorted(minilm.done, key=lambda e: list(MINILM_RUNS).index(e["label"])
                          if e["label"] in MINILM_RUNS else len(MINILM_RUNS))
    part["seconds"] = round(time.time() - t_runs, 1)
    statuses = {e["status"] for e in part["runs"]}
    part["status"] = "failed" if statuses & {"error", "failed"} else (
        "skipped_for_time" if statuses == {"skipped_for_time"} else "ok")
    problems = write_report(report, args.out, start)
    summary = report["summary"]
    log(f"done in {report['wall_seconds']} s: ok {summary['ok']}; failed {summary['failed']}; "
        f"skipped for time {summary['skipped_for_time']}")
    if problems:
        log(f"the report breaks its schema: {problems}")
    return 0 if not summary["failed"] and not problems else 1


def collect_checks(parts: dict, path: Path, code: int | None, output: Path) -> None:
    """Fold the checks child's results into the parts; a part it never reached records why."""
    found = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    for name in ("recipes", "resume", "exports"):
        if name in found:
            parts[name].update(found[name])
        if code != 0 and (name not in found or found[name]["seconds"] == 0):
            why = "killed at its deadline" if code in (-9, None) else f"exit {code}: {tail(output)}"
            parts[name].update(status="error" if code not in (-9, None) else "skipped_for_time", error=why)
