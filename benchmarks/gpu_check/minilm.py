"""The check's MiniLM runs on SST-2: ``python -m movprune run`` of the shipped SST-2 recipe with
overrides, several processes at once on the one device, stopped with SIGTERM at the deadline."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .prepare import REPO, tail

BASE_RECIPE = REPO / "src" / "movprune" / "recipes" / "repro" / "sst2.yaml"
#: label -> (method, epochs, extra overrides). Soft movement's scores start at -1.5, as in the
#: shipped recipes and docs/reproduce.sh, so that they can reach the cut.
MINILM_RUNS = {
    "hard_movement": ("movement", 1, []),
    "soft_movement": ("soft_movement", 1, ["pruner.scores_init=-1.5"]),
    "magnitude": ("magnitude", 1, []),
    "sensitivity": ("sensitivity", 1, []),
}
LONG_LABEL = "hard_movement_long"


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

    def __init__(self, specs: list[dict], env: dict[str, str], parallel: int, log) -> None:
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


def minilm_specs(smoke: bool, labels: tuple[str, ...], long_epochs: float, work: Path, model: Path, data: Path,
                 rows: int) -> list[dict]:
    """The commands of the runs ``labels`` (``python -m movprune run`` with overrides of the shipped
    SST-2 recipe): one epoch of ``rows`` training rows at batch 32 each, the long one ``long_epochs``
    (none when at most 1); a few steps on the fixtures when ``smoke``."""
    runs = {label: spec for label, spec in MINILM_RUNS.items() if label in labels}
    if long_epochs > 1 and LONG_LABEL in labels:
        runs[LONG_LABEL] = ("movement", long_epochs, [])
    specs = []
    per_epoch = math.ceil(rows / 32)
    for label, (method, epochs, extra) in runs.items():
        name = f"gpu-{label}-10"
        if smoke:  # a few steps each (the long one twice as many) on the fixtures
            steps = 6 * (2 if label == LONG_LABEL else 1)
            budget = [f"train.max_steps={steps}", "train.eval_every_steps=3", "train.batch_size=16",
                      "train.max_seq_length=32"]
        else:
            steps = math.ceil(epochs * per_epoch)
            budget = ["train.max_steps=null", f"train.epochs={epochs}", "train.eval_every_steps=500",
                      "train.log_every_steps=50"]
        overrides = [f"name={name}", f"model={model}", f"data_dir={data}", f"output_dir={work / 'minilm-runs'}",
                     f"pruner.method={method}", "pruner.remaining_pct=10", *budget, *extra]
        specs.append({"label": label, "method": method, "epochs": None if smoke else float(epochs),
                      "steps_planned": steps, "run_dir": str(work / "minilm-runs" / name),
                      "log": str(work / f"minilm-{label}.log"),
                      "command": [sys.executable, "-m", "movprune", "run", str(BASE_RECIPE), *overrides]})
    return specs
