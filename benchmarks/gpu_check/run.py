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
import gzip
import importlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import pack, schema

REPO = Path(__file__).resolve().parents[2]
REPORT = "gpu_check.json"
LOG = "gpu_check.log"
BASE_RECIPE = REPO / "src" / "movprune" / "recipes" / "repro" / "sst2.yaml"
FIXTURES = REPO / "tests" / "fixtures" / "glue"
#: Packages whose versions the report records.
PACKAGES = ("torch", "transformers", "accelerate", "datasets", "pydantic", "pydantic-core", "typing-extensions",
            "tokenizers", "safetensors", "numpy", "pyarrow", "pandas", "huggingface-hub", "fsspec", "dill",
            "multiprocess", "onnx", "onnxruntime", "typer", "rich", "pyyaml", "filelock")
#: MiniLM on SST-2: label -> (method, epochs, extra overrides). Soft movement's scores start at
#: -1.5, as in the shipped recipes and docs/reproduce.sh, so that they can reach the cut.
MINILM_RUNS = {
    "hard_movement": ("movement", 1, []),
    "soft_movement": ("soft_movement", 1, ["pruner.scores_init=-1.5"]),
    "magnitude": ("magnitude", 1, []),
    "sensitivity": ("sensitivity", 1, []),
}
LONG_LABEL = "hard_movement_long"


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


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a file (the error text of a failed child)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])[-2000:]


def install_wheels(wheels: Path, target: Path) -> list[str]:
    """pip-install every wheel in ``wheels`` into ``target`` (offline, no dependencies); their names."""
    files = sorted(wheels.glob("*.whl"))
    if not files:
        return []
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--disable-pip-version-check", "--target", str(target), *map(str, files)],
                   check=True)
    return [f.name for f in files]


def verify_pack(folder: Path) -> list[str]:
    """Files of the pack missing or different from its manifest (empty: it is intact)."""
    info = json.loads((folder / pack.MANIFEST).read_text(encoding="utf-8"))
    problems = []
    for f in info["files"]:
        path = folder / f["path"]
        if not path.is_file() or path.stat().st_size != f["bytes"] or pack.sha256(path) != f["sha256"]:
            problems.append(f["path"])
    return problems


def child_env(site: Path | None, cache: Path, smoke: bool) -> dict[str, str]:
    """The environment of every child: the installed wheels and src/ first, offline, quiet."""
    paths = ([str(site)] if site else []) + [str(REPO / "src")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "MOVPRUNE_CACHE": str(cache), "PYTHONUNBUFFERED": "1",
           "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
    if smoke:
        env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    else:
        env.setdefault("OMP_NUM_THREADS", "2")
    return env


def versions() -> dict[str, str | None]:
    """Installed versions of :data:`PACKAGES` as this process sees them (None: absent)."""
    from importlib import metadata

    importlib.invalidate_caches()
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def float32_minilm(packed: Path, to: Path) -> None:
    """The packed float16 MiniLM as a float32 model folder (training loads the weights' own dtype)."""
    from safetensors.torch import load_file, save_file

    to.mkdir(parents=True)
    weights = load_file(str(packed / "model.safetensors"))
    save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()},
              str(to / "model.safetensors"), metadata={"format": "pt"})
    for f in pack.MODEL_FILES:
        shutil.copy2(packed / f, to / f)


def tiny_model(tokenizer_dir: Path, to: Path) -> None:
    """A random tiny BERT (movprune's tiny-random-bert config, seed 0) with ``tokenizer_dir``'s tokenizer."""
    import torch
    from transformers import AutoModel

    from movprune.models import tiny_bert_config

    torch.manual_seed(0)
    AutoModel.from_config(tiny_bert_config()).save_pretrained(to)
    for f in pack.MODEL_FILES:
        if f != "config.json":
            shutil.copy2(tokenizer_dir / f, to / f)


def unpack_sst2(packed: Path, to: Path) -> int:
    """The packed SST-2 files, decompressed into ``to/SST-2``; returns the training rows."""
    (to / "SST-2").mkdir(parents=True)
    for f in pack.SST2_FILES:
        with gzip.open(packed / f"{f}.gz", "rb") as src, open(to / "SST-2" / f, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return train_rows(to)


def train_rows(glue: Path) -> int:
    """Rows of ``glue/SST-2/train.tsv`` (its header aside)."""
    with open(glue / "SST-2" / "train.tsv", encoding="utf-8") as f:
        return sum(1 for _ in f) - 1


def empty_part(budget: float, **fields: Any) -> dict:
    """A part's record before (or instead of) running it."""
    return {"status": "ok", "seconds": 0.0, "budget_seconds": budget, "skipped_for_time": [], "error": None, **fields}


def curve(run_dir: Path) -> list[dict]:
    """The evaluations a run logged (step, accuracy, remaining %), the final one included."""
    path = run_dir / "metrics.jsonl"
    points = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by SIGKILL
            if "eval" in rec:
                points.append({"step": rec["step"], "accuracy": rec["eval"].get("accuracy"),
                               "remaining_pct": rec.get("remaining_pct")})
    return points


class MiniLMRuns:
    """The MiniLM runs as concurrent ``python -m movprune run`` processes, at most ``parallel`` at once."""

    def __init__(self, specs: list[dict], env: dict[str, str], parallel: int, log: Log):
        self.queue, self.env, self.parallel, self.log = list(specs), env, parallel, log
        self.running: list[tuple[dict, subprocess.Popen, Any, float]] = []
        self.done: list[dict] = []

    def _start(self, spec: dict) -> None:
        out = open(spec["log"], "w", encoding="utf-8")
        proc = subprocess.Popen(spec["command"], cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.log(f"minilm_sst2: started {spec['label']} (pid {proc.pid}): {' '.join(spec['command'][3:6])} ...")
        self.running.append((spec, proc, out, time.time()))

    def poll(self, deadline: float) -> bool:
        """Start what fits, collect what ended; False once nothing is left to run or wait for."""
        while self.queue and len(self.running) < self.parallel and time.time() < deadline:
            self._start(self.queue.pop(0))
        for item in list(self.running):
            spec, proc, out, started = item
            if proc.poll() is not None:
                out.close()
                self.running.remove(item)
                self.done.append(self._entry(spec, proc.returncode, time.time() - started, stopped=False))
        return bool(self.queue or self.running)

    def stop(self, grace: float) -> None:
        """SIGTERM the runs still going (each saves a checkpoint), SIGKILL them after ``grace`` s;
        list the ones never started as skipped."""
        for spec, proc, _, _ in self.running:
            self.log(f"minilm_sst2: time is up, SIGTERM to {spec['label']} (pid {proc.pid})")
            proc.send_signal(signal.SIGTERM)
        end = time.time() + grace
        for spec, proc, out, started in self.running:
            try:
                proc.wait(timeout=max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out.close()
            self.done.append(self._entry(spec, proc.returncode, time.time() - started, stopped=True))
        self.running.clear()
        for spec in self.queue:
            self.done.append({**self._base(spec), "status": "skipped_for_time", "error": None, "steps_done": None,
                              "accuracy": None, "remaining_pct": None, "seconds": None, "curve": []})
        self.queue.clear()

    @staticmethod
    def _base(spec: dict) -> dict:
        return {k: spec[k] for k in ("label", "method", "epochs", "steps_planned")}

    def _entry(self, spec: dict, code: int, seconds: float, stopped: bool) -> dict:
        run_dir = Path(spec["run_dir"])
        points = curve(run_dir)
        entry = {**self._base(spec), "status": "ok", "error": None, "seconds": round(seconds, 1), "curve": points,
                 "steps_done": points[-1]["step"] if points else None, "accuracy": None, "remaining_pct": None}
        result = run_dir / "result.json"
        if code == 0 and result.exists():
            data = json.loads(result.read_text(encoding="utf-8"))
            entry.update(accuracy=data["metrics"].get("accuracy"), remaining_pct=data["remaining_pct"],
                         steps_done=data["steps"], train_seconds=data["train_seconds"],
                         warnings=data.get("warnings", []))
        elif stopped:
            entry.update(status="skipped_for_time", error=f"stopped at the deadline (exit {code}) after "
                         f"{entry['steps_done'] or 0} evaluated steps; its last evaluation is in 'curve'")
            if points:
                entry.update(accuracy=points[-1]["accuracy"], remaining_pct=points[-1]["remaining_pct"])
        else:
            entry.update(status="error", error=f"exit {code}: {tail(Path(spec['log']))}")
        self.log(f"minilm_sst2: {spec['label']} {entry['status']} in {entry['seconds']} s: accuracy "
                 f"{entry['accuracy']}, remaining {entry['remaining_pct']}, steps {entry['steps_done']}")
        self.log.attach(f"minilm_sst2 {spec['label']}", Path(spec["log"]), lines=60)
        return entry


def minilm_specs(mode: Mode, args, work: Path, model: Path, data: Path, rows: int) -> list[dict]:
    """The MiniLM runs' commands (python -m movprune run with overrides of the shipped SST-2 recipe)."""
    runs = {label: spec for label, spec in MINILM_RUNS.items() if label in mode.minilm_labels}
    if args.long_epochs > 1 and LONG_LABEL in mode.minilm_labels:
        runs[LONG_LABEL] = ("movement", args.long_epochs, [])
    specs = []
    per_epoch = math.ceil(rows / 32)
    for label, (method, epochs, extra) in runs.items():
        name = f"gpu-{label}-10"
        if mode.smoke:  # a few steps each (the long one twice as many) on the fixtures
            steps = 6 * (2 if label == LONG_LABEL else 1)
            budget = [f"train.max_steps={steps}", "train.eval_every_steps=3", "train.batch_size=16",
                      "train.max_seq_length=32"]
        else:
            steps = math.ceil(epochs * per_epoch)
            budget = ["train.max_steps=null", f"train.epochs={epochs}", "train.eval_every_steps=500",
                      "train.log_every_steps=50"]
        overrides = [f"name={name}", f"model={model}", f"data_dir={data}", f"output_dir={work / 'minilm-runs'}",
                     f"pruner.method={method}", "pruner.remaining_pct=10", *budget, *extra]
        specs.append({"label": label, "method": method, "epochs": None if mode.smoke else float(epochs),
                      "steps_planned": steps, "run_dir": str(work / "minilm-runs" / name),
                      "log": str(work / f"minilm-{label}.log"),
                      "command": [sys.executable, "-m", "movprune", "run", str(BASE_RECIPE), *overrides]})
    return specs


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
    overhead["seconds"] = round(time.time() - t0, 1)
    log(f"train_overhead: {overhead['status']} in {overhead['seconds']} s")
    log.attach("train_overhead", work / "overhead.log", lines=40)
    write_report(report, args.out, start)

    # 2 and 3. The checks in one child while the MiniLM runs share the device.
    runs_deadline = deadline - mode.reserve
    parts["minilm_sst2"]["budget_seconds"] = round(max(0.0, runs_deadline - time.time()), 1)
    minilm = MiniLMRuns(minilm_specs(mode, args, work, tiny if mode.smoke else work / "minilm", glue, rows), env,
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
