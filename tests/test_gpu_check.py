"""The GPU check (benchmarks/gpu_check): its CPU smoke mode runs every part and writes a report that
its schema accepts; the pack holds exactly what the GPU machine lacks, stays under its size limit and
is verified against its manifest; the MiniLM runs' overrides are valid recipes; runs still going at
the deadline are stopped and reported as such."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from benchmarks.gpu_check import pack, schema
from benchmarks.gpu_check.minilm import BASE_RECIPE, LONG_LABEL, MINILM_RUNS, MiniLMRuns, minilm_specs
from benchmarks.gpu_check.prepare import float32_minilm, install_wheels, unpack_sst2, verify_pack

from conftest import REPO

SST2_TRAIN_ROWS = 67_349


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run of the whole check (CPU, tiny model, data fixtures), as `make gpu-check SMOKE=1` runs it."""
    root = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "run", "--smoke", "--out", str(root / "out"),
                           "--work", str(root / "work")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    report = root / "out" / "gpu_check.json"
    assert report.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(report.read_text()), root


def test_smoke_run_writes_a_report_its_schema_accepts(smoke):
    proc, report, root = smoke
    assert schema.validate(report) == [], report.get("schema_problems")
    assert report["mode"] == "smoke" and report["environment"]["device"] == "cpu"
    assert "done in" in (root / "out" / "gpu_check.log").read_text()
    # Every part ran to its end: none raised, none was cut for time.
    assert {name: p["status"] for name, p in report["parts"].items() if p["status"] in ("error", "skipped_for_time")} \
        == {}
    assert report["summary"]["skipped_for_time"] == []
    assert proc.returncode == (0 if not report["summary"]["failed"] else 1), proc.stdout[-2000:]


def test_smoke_recipes_cover_every_method_and_judge_the_target(smoke):
    from benchmarks.gpu_check.checks import accepts_pattern
    from movprune import pruners

    runs = smoke[1]["parts"]["recipes"]["runs"]
    expected = {(m, p) for m in pruners.method_names() for p in ("unstructured", "hybrid") if accepts_pattern(m, p)}
    assert {("magnitude", "unstructured"), ("magnitude", "hybrid"), ("fisher", "hybrid")} <= expected
    assert ("fisher", "unstructured") not in expected and ("none", "hybrid") not in expected
    assert {(r["method"], r["pattern"]) for r in runs} == expected
    for r in runs:
        assert r["status"] in ("ok", "failed"), r
        assert r["bf16"] is True and r["steps"] == 8
        # ok exactly when the measured remaining % is within the pattern's granularity of the target
        assert (r["status"] == "ok") == (r["abs_error_pct"] <= r["tolerance_pct"]), r
    # whole weights when unstructured (12 matrices of the tiny BERT's 98,304 encoder weights)
    assert {r["tolerance_pct"] for r in runs if r["pattern"] == "unstructured"} == {100 * 12 / 98_304}
    dense = next(r for r in runs if r["target_remaining_pct"] == 100.0)
    assert dense["remaining_pct"] == 100.0 and dense["status"] == "ok"


def test_smoke_resume_and_exports_agree(smoke):
    parts = smoke[1]["parts"]
    for r in parts["resume"]["runs"]:
        assert r["status"] == "ok" and r["masks_equal"] and r["metrics_equal"] and r["resumed_from_step"] == 8, r
    formats = {f["format"]: f for f in parts["exports"]["formats"]}
    assert set(formats) == {"compact", "onnx"}
    for f in formats.values():
        assert f["status"] == "ok" and f["predictions_agree"] and f["max_abs_diff_to_run_logits"] <= 1e-3, f


def test_smoke_overhead_and_minilm_parts_report_their_runs(smoke):
    parts = smoke[1]["parts"]
    overhead = parts["train_overhead"]["report"]
    assert overhead["model"] == "random-tiny" and overhead["device"] == "cpu"
    assert set(overhead["results"]["1"]["fp32"]) == {"dense", "movement"}
    assert overhead["fused_adamw_groups"] == {"dense": [], "movement": ["scores"]}
    runs = {r["label"]: r for r in parts["minilm_sst2"]["runs"]}
    assert set(runs) == {"hard_movement", LONG_LABEL}
    for r in runs.values():
        assert r["status"] == "ok" and r["steps_done"] == r["steps_planned"], r
        assert r["remaining_pct"] == pytest.approx(10, abs=0.01) and r["accuracy"] is not None
        assert r["curve"][-1]["step"] == r["steps_planned"]
    assert runs[LONG_LABEL]["steps_planned"] == 2 * runs["hard_movement"]["steps_planned"]


def test_schema_names_each_problem():
    part = {"status": "ok", "seconds": 1.0, "budget_seconds": 2.0, "skipped_for_time": [], "error": None}
    assert schema.validate(part, schema.REPORT_SCHEMA["properties"]["parts"]["properties"]["resume"]) == [
        "report: missing key 'runs'"]
    bad = {**part, "status": "fine", "seconds": "1", "runs": [{"status": "ok", "method": 3}]}
    problems = schema.validate(bad, schema.REPORT_SCHEMA["properties"]["parts"]["properties"]["resume"], "resume")
    assert "resume.status: 'fine' is not one of ['ok', 'failed', 'error', 'skipped_for_time']" in problems
    assert any(p.startswith("resume.seconds: expected number, got str") for p in problems)
    assert any(p.startswith("resume.runs[0].method: expected string, got int") for p in problems)
    assert "resume.runs[0]: missing key 'masks_equal'" in problems
    assert schema.validate(True, {"type": "integer"}) != []  # a bool is not a number here


def test_the_wheels_are_the_closure_the_gpu_machine_lacks():
    assert set(pack.missing_packages()) == {"datasets", "dill", "multiprocess", "pydantic", "pydantic-core",
                                            "annotated-types", "typing-inspection", "typing-extensions"}
    # A requirement of datasets the machine had not (xxhash) would be followed and carried.
    assert "xxhash" in pack.missing_packages(has=pack.GPU_HAS - {"xxhash"})


def test_size_accounting_refuses_a_pack_over_its_limit():
    items = [pack.Item("wheels/a", None), pack.Item("model.safetensors", 50 * pack.MIB),
             pack.Item("train.tsv.gz", 10 * pack.MIB)]
    assert pack.check_size(items) == 60 * pack.MIB  # at the limit: accepted
    with pytest.raises(pack.PackTooLarge) as e:
        pack.check_size([*items, pack.Item("one-byte", 1)])
    assert str(e.value) == ("the pack would be 60.0 MiB, over its limit of 60 MiB (largest file: model.safetensors, "
                            "50.0 MiB); carry less")


def _fake_inputs(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "model"
    model.mkdir()
    save_file({"w": torch.linspace(-3, 3, 1000), "ids": torch.arange(4)}, str(model / "model.safetensors"))
    for f in pack.MODEL_FILES:
        (model / f).write_text(f"{f}\n")
    sst2 = tmp_path / "SST-2"
    sst2.mkdir()
    (sst2 / "train.tsv").write_text("sentence\tlabel\n" + "a fine film\t1\n" * 30)
    (sst2 / "dev.tsv").write_text("sentence\tlabel\nbad\t0\n")
    return model, sst2


def _fake_wheels(wheels: dict[str, str], to: Path) -> None:
    to.mkdir(parents=True)
    for name, version in wheels.items():
        (to / f"{name}-{version}-py3-none-any.whl").write_bytes(b"wheel")


def test_pack_build_writes_a_manifest_that_run_verifies(tmp_path):
    model, sst2 = _fake_inputs(tmp_path)
    info = pack.build(tmp_path / ".gpu", model, sst2, {"x": "1.0"}, fetch_wheels=_fake_wheels)
    paths = {f["path"] for f in info["files"]}
    assert paths == {"wheels/x-1.0-py3-none-any.whl", "glue/SST-2/train.tsv.gz", "glue/SST-2/dev.tsv.gz",
                     *(f"minilm-fp16/{f}" for f in ("model.safetensors", *pack.MODEL_FILES))}
    assert info["total_bytes"] == sum(f["bytes"] for f in info["files"]) <= pack.LIMIT_BYTES
    assert json.loads((tmp_path / ".gpu" / "manifest.json").read_text()) == info
    assert verify_pack(tmp_path / ".gpu") == []
    half = load_file(str(tmp_path / ".gpu" / "minilm-fp16" / "model.safetensors"))
    assert half["w"].dtype == torch.float16 and half["ids"].dtype == torch.int64
    assert info["model"]["max_abs_weight"] == 3.0 and 0 < info["model"]["max_abs_rounding_error"] < 2e-3

    # On the GPU machine: float32 weights again (the fp16 values), SST-2 decompressed.
    float32_minilm(tmp_path / ".gpu" / "minilm-fp16", tmp_path / "fp32")
    back = load_file(str(tmp_path / "fp32" / "model.safetensors"))
    assert back["w"].dtype == torch.float32 and torch.equal(back["w"], half["w"].float())
    assert unpack_sst2(tmp_path / ".gpu" / "glue" / "SST-2", tmp_path / "glue") == 30
    assert (tmp_path / "glue" / "SST-2" / "dev.tsv").read_bytes() == (sst2 / "dev.tsv").read_bytes()

    (tmp_path / ".gpu" / "glue" / "SST-2" / "dev.tsv.gz").write_bytes(b"truncated")
    assert verify_pack(tmp_path / ".gpu") == ["glue/SST-2/dev.tsv.gz"]


def test_pack_over_its_limit_writes_nothing(tmp_path):
    model, sst2 = _fake_inputs(tmp_path)
    (tmp_path / ".gpu").mkdir()
    (tmp_path / ".gpu" / "old").write_text("the previous pack")
    with pytest.raises(pack.PackTooLarge, match="over its limit"):
        pack.build(tmp_path / ".gpu", model, sst2, {"x": "1.0"}, limit=100, fetch_wheels=_fake_wheels)
    assert [p.name for p in (tmp_path / ".gpu").iterdir()] == ["old"]
    assert not (tmp_path / ".gpu.staging").exists()


def test_pack_dry_run_lists_the_real_files_under_the_limit(capsys):
    assert pack.main(["--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    sizes = {i["path"]: i["bytes"] for i in out["items"]}
    fp32 = (pack.minilm_folder() / "model.safetensors").stat().st_size
    assert fp32 / 2 < sizes["minilm-fp16/model.safetensors"] < fp32 / 2 + 100_000  # half, plus the header
    assert sizes["glue/SST-2/train.tsv.gz"] == 3_806_081  # uncompressed: an upper bound
    assert sorted(p for p, b in sizes.items() if b is None) == sorted(
        f"wheels/{n}=={v}" for n, v in pack.missing_packages().items())
    assert out["known_bytes"] < pack.LIMIT_BYTES - 8 * pack.MIB  # room for the wheels (3.5 MiB when packed)


def test_wheels_install_offline_into_a_folder(tmp_path):
    wheel = tmp_path / "gpucheckdemo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("gpucheckdemo/__init__.py", "VALUE = 42\n")
        z.writestr("gpucheckdemo-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: gpucheckdemo\nVersion: 1.0\n")
        z.writestr("gpucheckdemo-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                   "Tag: py3-none-any\n")
        z.writestr("gpucheckdemo-1.0.dist-info/RECORD", "")
    assert install_wheels(tmp_path, tmp_path / "site") == [wheel.name]
    out = subprocess.run([sys.executable, "-c", "import gpucheckdemo; print(gpucheckdemo.VALUE)"],
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "site")}, capture_output=True, text=True)
    assert out.stdout.strip() == "42", out.stderr


def test_minilm_runs_are_valid_recipes_of_one_epoch_and_longer(tmp_path):
    from movprune.recipe import load_recipe
    from movprune.training.setup import total_steps

    labels = (*MINILM_RUNS, LONG_LABEL)
    specs = minilm_specs(False, labels, 3, tmp_path, tmp_path / "minilm", tmp_path / "glue", SST2_TRAIN_ROWS)
    assert [s["label"] for s in specs] == list(labels)
    for spec in specs:
        assert spec["command"][1:5] == ["-m", "movprune", "run", str(BASE_RECIPE)]
        recipe = load_recipe(spec["command"][4], spec["command"][5:])
        assert recipe.pruner.method == spec["method"] and recipe.pruner.remaining_pct == 10
        assert recipe.model == str(tmp_path / "minilm") and recipe.train.batch_size == 32
        assert total_steps(recipe, SST2_TRAIN_ROWS) == spec["steps_planned"] == (
            3 * 2105 if spec["label"] == LONG_LABEL else 2105)
    soft = next(s for s in specs if s["method"] == "soft_movement")
    assert load_recipe(soft["command"][4], soft["command"][5:]).pruner.scores_init == -1.5
    assert LONG_LABEL not in [s["label"] for s in minilm_specs(False, labels, 1, tmp_path, tmp_path, tmp_path, 10)]


def test_runs_still_going_at_the_deadline_are_stopped_and_reported(tmp_path):
    # A child that, like `movprune run`, exits 143 on SIGTERM.
    waiting = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n"
               "print('ready', flush=True)\ntime.sleep(60)\n")

    def spec(label: str) -> dict:
        return {"label": label, "method": "movement", "epochs": 1.0, "steps_planned": 10,
                "run_dir": str(tmp_path / label), "log": str(tmp_path / f"{label}.log"),
                "command": [sys.executable, "-c", waiting]}

    class Log(list):
        __call__ = list.append

        def attach(self, *args, **kwargs):
            pass

    log = Log()
    runs = MiniLMRuns([spec("a"), spec("b")], dict(os.environ), parallel=1, log=log)
    assert runs.poll(deadline=time.time() + 60)  # starts a; b waits for its slot
    deadline = time.time() + 30
    while "ready" not in (tmp_path / "a.log").read_text() and time.time() < deadline:
        time.sleep(0.05)
    runs.stop(grace=20)
    done = {e["label"]: e for e in runs.done}
    assert done["a"]["status"] == "skipped_for_time" and "exit 143" in done["a"]["error"]
    assert done["b"] == {"label": "b", "method": "movement", "epochs": 1.0, "steps_planned": 10,
                         "status": "skipped_for_time", "error": None, "steps_done": None, "accuracy": None,
                         "remaining_pct": None, "seconds": None, "curve": []}
    assert not runs.poll(deadline=time.time() + 60)
