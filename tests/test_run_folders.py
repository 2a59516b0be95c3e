"""Run folders never lose or fake a result: safe names, ownership, locking, --force, exports,
atomic publishing, typed results (issue #14)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from movprune import results, run_folder
from movprune.cli.main import app
from movprune.errors import ForeignFolderError, InvalidResultError, ResultExistsError, RunLockedError
from movprune.io import staged_dir
from movprune.recipe import validate_recipe

from conftest import GLUE_DIR, tiny_recipe_dict

FAST = {"max_steps": 2, "batch_size": 8, "max_train_samples": 16, "max_eval_samples": 16, "log_every_steps": 1}


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its content (None for folders)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def tiny(output_dir: Path, name: str = "tiny-sst2", **sections):
    return validate_recipe(tiny_recipe_dict(output_dir, name=name, train=FAST, **sections), "test")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One tiny finished run (written under umask 022), copied by the tests that need one."""
    from movprune.training.loop import run

    out = tmp_path_factory.mktemp("finished")
    old = os.umask(0o022)
    try:
        result = run(tiny(out))
    finally:
        os.umask(old)
    return Path(result.run_dir)


def copy_run(finished_run: Path, dest: Path) -> Path:
    shutil.copytree(finished_run, dest)
    return dest


# ------------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize("name", [".", "..", "tiny-sst2/model", "../../x", "/tmp/elsewhere", "a" * 200, "sp ace"])
def test_an_unsafe_run_name_is_refused_and_nothing_around_is_touched(tmp_path, finished_run, name):
    results_dir = tmp_path / "work" / "results"
    copy_run(finished_run, results_dir / "tiny-sst2")
    (results_dir / "notes.txt").write_text("mine")
    (tmp_path / "work" / "source.py").write_text("print()")
    in_file = tmp_path / "work" / "in-file.yaml"
    in_file.write_text(yaml.safe_dump(tiny_recipe_dict(results_dir, name=name)))
    plain = tmp_path / "work" / "plain.yaml"
    plain.write_text(yaml.safe_dump(tiny_recipe_dict(results_dir)))
    before = tree(tmp_path)

    for args in (["run", str(in_file)], ["run", str(plain), f"name={name}"],
                 ["run", str(plain), f"name={name}", "--force"]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, res.output
        assert "name:" in res.stderr and "Traceback" not in res.output
        assert tree(tmp_path) == before


def test_a_sweep_name_that_is_not_one_folder_is_refused(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tmp_path / "results", name="../x")))
    res = CliRunner().invoke(app, ["sweep", str(recipe), "--sparsity", "10", "--dry-run"])
    assert res.exit_code == 2 and "names the sweep's folder" in res.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "results").exists()


# ------------------------------------------------------------------------------------------------
# Ownership: movprune deletes only its own unfinished runs


def test_prepare_clears_only_its_own_unfinished_run(tmp_path, finished_run):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ForeignFolderError, match="never deletes it"):
        run_folder.prepare(foreign, force=True)
    assert (foreign / "notes.txt").read_text() == "mine"

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(ForeignFolderError):
        run_folder.prepare(a_file, force=True)
    assert a_file.read_text() == "x"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_folder.prepare(empty, force=False).path == empty  # nothing to lose: used as is

    ours = tmp_path / "ours"  # an interrupted run: marker, no result.json
    ours.mkdir()
    (ours / run_folder.MARKER_FILE).write_text("")
    (ours / "metrics.jsonl").write_text("{}\n")
    folder = run_folder.prepare(ours, force=False)
    assert folder.path == ours and sorted(p.name for p in ours.iterdir()) == [run_folder.MARKER_FILE]

    done = copy_run(finished_run, tmp_path / "done")
    with pytest.raises(ResultExistsError, match="--force"):
        run_folder.prepare(done, force=False)


def test_files_are_written_with_the_users_umask_and_the_model_before_the_result(finished_run):
    for name in ("result.json", "recipe.yaml", "metrics.jsonl", "model/config.json"):
        assert (finished_run / name).stat().st_mode & 0o777 == 0o644, name
    assert (finished_run / run_folder.MARKER_FILE).is_file()
    assert not any(p.name.startswith(".model") for p in finished_run.iterdir())  # no staging left
    # The model was complete (published by rename) before result.json was written.
    assert (finished_run / "model").stat().st_mtime_ns <= (finished_run / "result.json").stat().st_mtime_ns


# ------------------------------------------------------------------------------------------------
# --force never deletes before it replaces


def _failing_step(monkeypatch, exc: BaseException) -> None:
    import movprune.training.loop as train

    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(train, "train_step", boom)


def test_a_forced_run_that_fails_or_is_interrupted_keeps_the_old_result(tmp_path, finished_run, monkeypatch):
    from movprune.training.loop import run

    run_dir = copy_run(finished_run, tmp_path / "tiny-sst2")
    before = tree(run_dir)
    for exc in (RuntimeError("bad data"), KeyboardInterrupt()):
        _failing_step(monkeypatch, exc)
        with pytest.raises(type(exc)):
            run(tiny(tmp_path, seed=1), force=True)
        assert tree(run_dir) == before
        assert results.RunResult.load(run_dir).seed == 0

    monkeypatch.undo()
    bad = tmp_path / "bad-glue" / "SST-2"  # labels out of range: fails on the data, wherever it is caught
    bad.mkdir(parents=True)
    shutil.copy(GLUE_DIR / "SST-2" / "dev.tsv", bad / "dev.tsv")
    (bad / "train.tsv").write_text("sentence\tlabel\n" + "a fine film\t7\n" * 16)
    with pytest.raises(Exception):  # noqa: B017 - any failure mid-run: what matters is the folder after it
        run(tiny(tmp_path, seed=1, data_dir=str(bad.parent)), force=True)
    assert tree(run_dir) == before

    result = run(tiny(tmp_path, seed=1), force=True)  # the new run replaces it once finished
    assert result.seed == 1 and results.RunResult.load(run_dir).seed == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tiny-sst2")) == [".tiny-sst2.lock"]


def test_an_interrupted_sweep_force_keeps_that_runs_old_result(tmp_path, finished_run, monkeypatch):
    from movprune.experiments import sweep

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tmp_path / "results", train=FAST)))
    plan = sweep.plan_sweep(recipe, remaining_pcts=[10], methods=["movement"], seeds=[0])
    run_dir = copy_run(finished_run, plan[0].run_dir)
    before = tree(run_dir)
    _failing_step(monkeypatch, KeyboardInterrupt())  # as a kill mid-training
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(plan, force=True)
    assert tree(run_dir) == before


# ------------------------------------------------------------------------------------------------
# Locking

_HOLDER = """
import sys
from movprune.run_folder import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def held_lock(tmp_path):
    """Lock a run folder from another process for the test's duration."""
    procs = []

    def hold(run_dir: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run_dir)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env={**os.environ})
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_second_run_of_the_same_name_exits_2_naming_the_holder(tmp_path, held_lock):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tmp_path / "results", train=FAST)))
    holder = held_lock(tmp_path / "results" / "tiny-sst2")
    res = CliRunner().invoke(app, ["run", str(recipe)])
    assert res.exit_code == 2, res.output
    assert f"process {holder.pid} on " in res.stderr and "Traceback" not in res.output
    assert not (tmp_path / "results" / "tiny-sst2").exists()


def test_a_sweep_skips_and_reports_the_runs_another_sweep_is_running(tmp_path, held_lock):
    from movprune.experiments import sweep

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tmp_path / "results", train=FAST)))
    plan = sweep.plan_sweep(recipe, remaining_pcts=[10], methods=["magnitude", "movement"], seeds=[0])
    holder = held_lock(plan[1].run_dir)
    outcomes = sweep.run_sweep(plan)
    assert [o.status for o in outcomes] == ["finished", "locked"]
    assert str(holder.pid) in outcomes[1].error
    assert results.is_finished(plan[0].run_dir) and not plan[1].run_dir.exists()


# ------------------------------------------------------------------------------------------------
# Exports never write into or over a run folder or a folder movprune did not create


def test_export_never_replaces_a_run_or_a_foreign_folder(tmp_path, finished_run):
    from movprune.export import export_run

    source = copy_run(finished_run, tmp_path / "source")
    other = copy_run(finished_run, tmp_path / "other")
    before = tree(other)
    with pytest.raises(ForeignFolderError, match="run folder"):
        export_run(source, other, "dense", force=True)
    with pytest.raises(ForeignFolderError, match="run folder"):
        export_run(source, other / "exported", "dense", force=True)
    assert tree(other) == before

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ForeignFolderError, match="not an export movprune made"):
        export_run(source, foreign, "dense", force=True)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

    exported = tmp_path / "exported"
    export_run(source, exported, "dense")
    with pytest.raises(ResultExistsError, match="--force"):
        export_run(source, exported, "dense")
    (exported / "stale.txt").write_text("from the earlier export")
    export_run(source, exported, "dense", force=True)  # an export movprune made: replaced
    assert not (exported / "stale.txt").exists() and (exported / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


# ------------------------------------------------------------------------------------------------
# The staging-then-publish primitive


def test_staged_dir_keeps_the_old_folder_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_dir(target, replace=True) as tmp:
            (tmp / "new.txt").write_text("new")
            assert (target / "old.txt").read_text() == "old"
            raise RuntimeError("interrupted")
    assert tree(target) == {"old.txt": b"old"} and sorted(p.name for p in tmp_path.iterdir()) == ["target"]
    with pytest.raises(ResultExistsError):
        with staged_dir(target) as tmp:  # replace=False: an existing folder stays
            (tmp / "new.txt").write_text("new")
    assert tree(target) == {"old.txt": b"old"}
    with staged_dir(target, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert tree(target) == {"new.txt": b"new"} and sorted(p.name for p in tmp_path.iterdir()) == ["target"]


# ------------------------------------------------------------------------------------------------
# Sweep: a finished run with another recipe is not skipped silently


def test_a_sweep_refuses_to_skip_a_finished_run_trained_with_another_recipe(tmp_path, finished_run):
    from movprune.experiments import sweep

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tmp_path / "results", train=FAST)))
    plan = sweep.plan_sweep(recipe, remaining_pcts=[10], methods=["movement"], seeds=[0])
    run_dir = copy_run(finished_run, plan[0].run_dir)
    same = plan[0].recipe.model_copy(update={"name": "elsewhere", "output_dir": "elsewhere"})
    (run_dir / "recipe.yaml").write_text(same.to_yaml())
    sweep.check_finished_recipes(plan, "recipe.yaml")  # name and output_dir aside: the same run
    # As written before the per-method configs (every method's keys, the unused ones null): the same.
    from movprune.pruners.config import METHOD_SPECIFIC_KEYS

    older = yaml.safe_load(same.to_yaml())
    older["pruner"] = {**{key: None for key in METHOD_SPECIFIC_KEYS}, **older["pruner"]}
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(older))
    sweep.check_finished_recipes(plan, "recipe.yaml")

    changed = plan[0].recipe.model_copy(update={"train": plan[0].recipe.train.model_copy(update={"lr": 0.5})})
    (run_dir / "recipe.yaml").write_text(changed.to_yaml())
    res = CliRunner().invoke(app, ["sweep", str(recipe), "--sparsity", "10", "--pruners", "movement",
                                   "--seeds", "0", "--dry-run"])
    assert res.exit_code == 2, res.output
    message = " ".join(res.stderr.split())
    assert "train.lr: 0.5 -> 0.001" in message and "--force" in message and "name=" in message
    assert "pruner" not in message.split("finished with another recipe")[1].split(")")[0]


# ------------------------------------------------------------------------------------------------
# Data fingerprints


def test_the_tokenisation_cache_key_follows_the_content_not_size_and_mtime(tmp_path):
    from movprune.tasks.base import file_fingerprint

    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\nabc\t1\n")
    stamp = path.stat().st_mtime_ns
    first = file_fingerprint(path, "train")
    path.write_text("sentence\tlabel\nxyz\t0\n")  # same size
    os.utime(path, ns=(stamp, stamp))
    assert path.stat().st_size == len("sentence\tlabel\nabc\t1\n") and path.stat().st_mtime_ns == stamp
    assert file_fingerprint(path, "train") != first
    assert file_fingerprint(path, "train") == file_fingerprint(path, "train")


# ------------------------------------------------------------------------------------------------
# Typed results


@pytest.mark.parametrize("field, value, fragment", [
    ("remaining_pct", math.nan, "finite"), ("metrics", {"accuracy": math.inf}, "finite"),
    ("seed", "42", "integer"), ("metrics", "high", "dictionary"), ("task", None, "string")])
def test_an_invalid_result_is_a_typed_error_and_compare_skips_it(tmp_path, finished_run, field, value, fragment):
    from movprune.experiments.compare import scan_runs

    good = copy_run(finished_run, tmp_path / "good")
    bad = copy_run(finished_run, tmp_path / "bad")
    data = json.loads((bad / "result.json").read_text())
    data[field] = value
    (bad / "result.json").write_text(json.dumps(data))  # json writes NaN/Infinity, as older runs did
    with pytest.raises(InvalidResultError, match=fragment):
        results.RunResult.load(bad)
    assert not results.is_finished(bad)

    scan = scan_runs([tmp_path])
    assert [r["run_dir"] for r in scan.results] == [str(good)]
    assert len(scan.warnings) == 1 and str(bad) in scan.warnings[0] and field in scan.warnings[0]
    res = CliRunner().invoke(app, ["compare", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "bad" in res.stderr


def test_an_older_result_without_the_newer_keys_still_loads(tmp_path, finished_run):
    run_dir = copy_run(finished_run, tmp_path / "old")
    data = json.loads((run_dir / "result.json").read_text())
    keep = ("task", "model", "pruner", "target_remaining_pct", "remaining_pct", "metrics", "seed", "steps",
            "train_seconds", "versions")
    (run_dir / "result.json").write_text(json.dumps({k: data[k] for k in keep} | {"future_key": [1]}))
    loaded = results.RunResult.load(run_dir)
    assert loaded.metrics == data["metrics"] and loaded.remaining_by_module == {}
    assert loaded.model_dump(mode="json")["future_key"] == [1]


def test_a_result_that_would_not_be_valid_is_never_written(tmp_path):
    with pytest.raises(ValueError):
        results.RunResult.model_construct(metrics={"accuracy": math.nan}).save(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_run_lock_is_released_after_a_run_and_after_a_failure(tmp_path):
    with run_folder.run_lock(tmp_path / "x"):
        with pytest.raises(RunLockedError):
            with run_folder.run_lock(tmp_path / "x"):
                pass
    with pytest.raises(RuntimeError):
        with run_folder.run_lock(tmp_path / "x"):
            raise RuntimeError
    with run_folder.run_lock(tmp_path / "x"):
        assert json.loads(run_folder.holder_path(tmp_path / "x").read_text())["pid"] == os.getpid()
    assert not run_folder.holder_path(tmp_path / "x").exists()
