"""Data that would be read wrongly, interruptions outside one run, messages that lose text.

The rule every case follows: what the data says is either used as the user meant it, or refused
before training with one line naming the file, the row or key, and the fix (exit 2).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_cli, stop_once_training
from conftest import KillAt as _KillAt
from conftest import Killed as _Killed

T_CSV = 'text,label\n"good",pos\n"bad",neg\n"fine",pos\n"awful",neg\n'


def own_recipe(tmp: Path, files: dict[str, str], *, task: str = "text_classification", name: str = "own",
               dataset: dict | None = None, **train) -> Path:
    """Write each of ``files`` (name -> content) into ``tmp`` and a tiny recipe reading them."""
    for fname, content in files.items():
        (tmp / fname).write_text(content)
    splits = {"train": next(iter(files)), "validation": list(files)[-1]}
    data = {"files": {k: str(tmp / v) for k, v in splits.items()}, **(dataset or {})}
    if task != "extractive_qa":
        data.setdefault("text_columns", ["text"])
    recipe = {"name": name, "task": task, "dataset": data, "model": "tiny-random-bert", "seed": 0,
              "output_dir": str(tmp / "results"), "pruner": {"method": "magnitude", "remaining_pct": 10},
              "train": {"max_steps": 2, "batch_size": 2, "max_seq_length": 32, "log_every_steps": 1, **train}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def one_error_line(proc, fragment: str) -> str:
    """Exit 2, exactly one ``error:`` line, holding ``fragment``; no traceback. Returns the line."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert fragment in errors[0], errors[0]
    assert "Traceback" not in proc.stderr
    return errors[0]


# -- messages keep their text ----------------------------------------------------------------------


def test_error_text_in_brackets_is_printed_as_written(tmp_path):
    """Rich markup is never applied to message text: ``[x]`` stays, ``[/b]`` is no MarkupError."""
    path = own_recipe(tmp_path, {"t.csv": T_CSV})
    proc = run_cli("run", str(path), "--dry-run", "name=a[/b]")
    line = one_error_line(proc, "name")
    assert "a[/b]" in line


def test_error_and_interrupted_lines_keep_brackets(capsys):
    import typer

    from movprune.cli.common import reported_errors
    from movprune.errors import DataError, RunInterrupted

    with pytest.raises(typer.Exit):
        with reported_errors():
            raise DataError("train.report_to: wandb is not installed; pip install 'movprune[wandb]'")
    assert "pip install 'movprune[wandb]'" in capsys.readouterr().err
    with pytest.raises(typer.Exit):
        with reported_errors(resume_command="movprune run r.yaml 'train.report_to=[tensorboard]' --resume"):
            raise RunInterrupted("stopped at step 3", exit_code=143, checkpoint=None)
    assert "'train.report_to=[tensorboard]' --resume" in capsys.readouterr().err


# -- saved recipes load again ----------------------------------------------------------------------


def test_own_data_run_reruns_from_its_saved_recipe(tmp_path):
    path = own_recipe(tmp_path, {"t.csv": T_CSV})
    assert run_cli("run", str(path)).returncode == 0
    saved = tmp_path / "results" / "own" / "recipe.yaml"
    dataset = yaml.safe_load(saved.read_text())["dataset"]
    assert "question_column" not in dataset and "answers_column" not in dataset
    assert dataset["text_columns"] == ["text"] and dataset["label_column"] == "label"
    proc = run_cli("run", str(saved), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    # A sweep of the same file, twice: the second finds the first's runs finished and skips them.
    for _ in range(2):
        proc = run_cli("sweep", str(path), "--seeds", "1", "--sparsity", "10")
        assert proc.returncode == 0, proc.stderr[-3000:]


def test_recipe_files_listing_every_dataset_key_still_load(tmp_path):
    """Files saved before the recipe kept only the family's keys wrote all of them at their defaults."""
    from movprune.recipe import load_recipe

    path = own_recipe(tmp_path, {"t.csv": T_CSV}, dataset={
        "question_column": "question", "context_column": "context", "answers_column": "answers",
        "id_column": "id", "label_names": None})
    assert load_recipe(path).dataset.text_columns == ["text"]
    path = own_recipe(tmp_path, {"t.csv": T_CSV}, dataset={"question_column": "q"})
    with pytest.raises(Exception, match="dataset.question_column: does not apply to task text_classification"):
        load_recipe(path)


# -- own data: used as meant, or refused before training -------------------------------------------


def qa_rows(*rows: tuple[str, str, str, str, int]) -> str:
    """JSON Lines of (id, question, context, answer, answer_start) rows."""
    return "".join(json.dumps({"id": i, "question": q, "context": c, "answers": {"text": [a], "answer_start": [s]}})
                   + "\n" for i, q, c, a, s in rows)


QA_OK = qa_rows(("a", "who?", "Ann went home.", "Ann", 0), ("b", "where?", "Ann went home.", "home", 9))

DATA_CASES = [
    ("empty CSV text cell", {"t.csv": 'text,label\ngood,pos\n,neg\nfine,pos\n'}, {},
     "t.csv line 3: column 'text' is empty"),
    ("null JSONL text", {"t.jsonl": '{"text": "a", "label": "x"}\n{"text": null, "label": "y"}\n'}, {},
     "t.jsonl line 2: column 'text' is empty"),
    ("labels mixing integers and strings",
     {"t.jsonl": '{"text": "a", "label": 1}\n{"text": "b", "label": "x"}\n{"text": "c", "label": 0}\n'}, {},
     "column 'label' mixes text labels ({tmp}/t.jsonl line 2) with numbers ({tmp}/t.jsonl lines 1, 3)"),
    ("header-only CSV", {"t.csv": "text,label\n", "v.csv": T_CSV}, {},
     "dataset.files.train: {tmp}/t.csv holds only its header line, no rows"),
    ("empty file", {"t.jsonl": "", "v.csv": T_CSV}, {}, "dataset.files.train: {tmp}/t.jsonl is empty: it has no rows"),
    ("fractional labels in the evaluation split",
     {"t.csv": "text,label\na,0\nb,1\n", "v.csv": "text,label\na,0.5\nb,1.7\n"}, {},
     "{tmp}/v.csv lines 2, 3: label 0.5 in column 'label' is not a class"),
    ("evaluation label not a train class", {"t.csv": T_CSV, "v.csv": "text,label\na,pos\nb,0\n"}, {},
     "label 0 in split 'validation' ({tmp}/v.csv line 3) not among the classes of the train split (neg, pos)"),
    ("infinite regression target in the evaluation split",
     {"t.csv": "text,label\na,0.5\nb,1.7\n", "v.csv": "text,label\na,0.5\nb,inf\n"}, {"task": "regression"},
     "{tmp}/v.csv line 3: target inf in column 'label' is not a finite number"),
    ("TSV with an unbalanced quote",
     {"t.tsv": "text\tlabel\n" + "".join(f'{chr(34) if i == 5 else ""}row {i}{chr(34) if i == 15 else ""}\t'
                                         f'{"pos" if i % 2 else "neg"}\n' for i in range(20)), "v.csv": T_CSV}, {},
     "{tmp}/t.tsv line 7: column 'text' starts with a double quote"),
    ("QA: duplicate ids in the evaluation file",
     {"t.jsonl": QA_OK, "v.jsonl": qa_rows(("a", "who?", "Ann went.", "Ann", 0), ("a", "who?", "Bo went.", "Bo", 0))},
     {"task": "extractive_qa"}, "dataset.id_column: id 'a' is used twice ({tmp}/v.jsonl lines 1, 2)"),
    ("QA: answer_start off the answer", {"t.jsonl": qa_rows(("a", "who?", "Ann went home.", "home", 2)),
                                         "v.jsonl": QA_OK},
     {"task": "extractive_qa"}, "{tmp}/t.jsonl line 1: the answer 'home' is not at answer_start 2 of its context"),
    ("QA: empty context", {"t.jsonl": qa_rows(("a", "who?", "", "", 0)), "v.jsonl": QA_OK},
     {"task": "extractive_qa"}, "dataset.context_column: {tmp}/t.jsonl line 1: column 'context' is empty"),
]


@pytest.mark.parametrize("files, recipe, fragment", [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_bad_own_data_is_refused_by_dry_run(tmp_path, files, recipe, fragment):
    path = own_recipe(tmp_path, files, **recipe)
    one_error_line(run_cli("run", str(path), "--dry-run"), fragment.format(tmp=tmp_path))
    # and before anything is written when the run is started for real
    one_error_line(run_cli("run", str(path)), fragment.format(tmp=tmp_path))
    assert not (tmp_path / "results").exists()


def _family(tmp_path, files: dict[str, str], **dataset):
    from movprune.tasks import get_task
    from movprune.tasks.config import DatasetConfig

    for name, content in files.items():
        (tmp_path / name).write_text(content)
    names = list(files)
    return get_task("text_classification", DatasetConfig(
        files={"train": str(tmp_path / names[0]), "validation": str(tmp_path / names[-1])},
        text_columns=["text"], **dataset))


def test_labels_map_by_value_across_splits(tmp_path):
    """Train labels the texts "1", "2", validation the integer 1: the validation 1 is class "1"."""
    task = _family(tmp_path, {"t.jsonl": '{"text": "a", "label": "1"}\n{"text": "b", "label": "2"}\n',
                              "v.jsonl": '{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n'})
    assert task.check_data(None, ["train", "validation"]) == []
    assert task.label_names() == ["1", "2"]
    assert task.load_split(None, "validation")["label"] == [0, 1]
    assert task.load_split(None, "train")["label"] == [0, 1]


def test_numeric_labels_are_ids_into_label_names(tmp_path):
    task = _family(tmp_path, {"t.csv": "text,label\na,1\nb,0\n"}, label_names=["neg", "pos"])
    assert task.load_split(None, "train")["label"] == [1, 0]


def test_text_that_looks_like_numbers_is_read_as_written(tmp_path):
    """A text column of numbers is text: CSV cells as written ("007" stays "007"), JSON numbers as text."""
    task = _family(tmp_path, {"t.csv": "text,label\n007,pos\n1.50,neg\n"})
    assert task.load_split(None, "train")["text"] == ["007", "1.50"]
    task = _family(tmp_path, {"t.jsonl": '{"text": 7, "label": "a"}\n{"text": 12, "label": "b"}\n'})
    assert task.load_split(None, "train")["text"] == ["7", "12"]


def test_row_numbers_follow_a_slice(tmp_path):
    from movprune.errors import DataError

    task = _family(tmp_path, {"t.csv": "text,label\na,pos\nb,neg\nc,pos\n,neg\n"})
    with pytest.raises(DataError, match=r"t.csv line 5: column 'text' is empty"):
        task.load_split(None, "train[2:]")


# -- resume: the new run, the same data, a usable checkpoint ---------------------------------------




def _killed_own_run(tmp_path, kill_at: int) -> tuple[Path, Path]:
    """An own-data run of 8 steps, checkpoints every 2 (2 kept), killed at ``kill_at``."""
    from movprune.recipe import load_recipe
    from movprune.training.loop import run

    path = own_recipe(tmp_path, {"t.csv": T_CSV}, max_steps=8, save_every_steps=2, keep_checkpoints=2)
    with pytest.raises(_Killed):
        run(load_recipe(path), observer=_KillAt(kill_at))
    return path, tmp_path / "results" / "own"


def test_resume_on_changed_data_is_refused(tmp_path):
    path, run_dir = _killed_own_run(tmp_path, 3)
    train = tmp_path / "t.csv"
    train.write_text(T_CSV.replace("pos", "tmp").replace("neg", "pos").replace("tmp", "neg"))  # every label flipped
    one_error_line(run_cli("run", str(path), "--resume"),
                   f"cannot resume: {train} changed (SHA-256")
    assert not (run_dir / "result.json").exists()
    train.write_text(T_CSV)  # the data the run started with: it resumes
    proc = run_cli("run", str(path), "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stderr and json.loads((run_dir / "result.json").read_text())["steps"] == 8


def test_resume_falls_back_to_an_older_checkpoint(tmp_path):
    from movprune.training import checkpoint

    path, run_dir = _killed_own_run(tmp_path, 5)
    assert [s for s, _ in checkpoint.checkpoints(run_dir)] == [2, 4]
    weights = run_dir / "checkpoints" / "step-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    proc = run_cli("run", str(path), "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (f"{run_dir}/checkpoints/step-4: model.safetensors is cut short (1000 of" in proc.stderr
            and "resuming from the older step-2" in proc.stderr), proc.stderr
    assert f"resuming from {run_dir}/checkpoints/step-2" in proc.stderr
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 8


def test_resume_with_no_usable_checkpoint_is_one_line(tmp_path):
    path, run_dir = _killed_own_run(tmp_path, 5)
    for step in (2, 4):
        (run_dir / "checkpoints" / f"step-{step}" / "optimizer.bin").unlink()
    one_error_line(run_cli("run", str(path), "--resume"),
                   f"no usable checkpoint in {run_dir}/checkpoints ({run_dir}/checkpoints/step-4: optimizer.bin "
                   "is missing; ")


def test_resume_after_an_interrupted_force_finishes_the_new_run(tmp_path):
    """The resume command printed when a forced re-run is stopped finishes that re-run: it never
    reports the old run as done."""


    path = own_recipe(tmp_path, {"t.csv": T_CSV}, max_steps=120)
    run_dir = tmp_path / "results" / "own"
    assert run_cli("run", str(path)).returncode == 0
    old = json.loads((run_dir / "result.json").read_text())
    staging = run_dir.parent / ".own.staging"
    proc = subprocess.Popen([sys.executable, "-m", "movprune", "run", str(path), "--force"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "400"})
    stderr = stop_once_training(proc, staging)
    assert proc.returncode == 143, stderr[-3000:]
    hint = stderr.split("resume with: ", 1)[1].split()
    assert hint[:2] == ["movprune", "run"] and hint[-1] == "--resume"
    resumed = run_cli(*hint[1:])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    new = json.loads((run_dir / "result.json").read_text())
    assert new["finished_at"] != old["finished_at"] and new["steps"] == 120
    assert not staging.exists()
    assert "resuming from" in resumed.stderr


# -- a full disk, a model with no attention heads left ---------------------------------------------


def test_full_disk_while_saving_the_model_is_one_line(tmp_path, monkeypatch):
    """safetensors reports a full disk as its own error type, not an OSError."""
    from safetensors import SafetensorError
    from transformers import PreTrainedModel

    def full(self, *args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    path = own_recipe(tmp_path, {"t.csv": T_CSV})
    one_error_line(run_cli("run", str(path)),
                   f"cannot write {tmp_path}/results/own/model: no space left on the device")
    assert not (tmp_path / "results" / "own" / "result.json").exists()


def test_full_disk_while_saving_a_checkpoint_is_one_line(tmp_path, monkeypatch):
    """torch.save (accelerate's optimizer state) reports a full disk as a RuntimeError."""
    from accelerate import Accelerator

    def full(self, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(Accelerator, "save_state", full)
    path = own_recipe(tmp_path, {"t.csv": T_CSV}, save_every_steps=1)
    one_error_line(run_cli("run", str(path)),
                   f"cannot write {tmp_path}/results/own/checkpoints/step-1: no space left on the device")
    assert not list((tmp_path / "results" / "own" / "checkpoints").iterdir())  # no partial folder left


def test_other_write_errors_stay_errors_to_report():
    from movprune.io import writing

    with pytest.raises(RuntimeError, match="a bug"):
        with writing("/x"):
            raise RuntimeError("a bug")


def test_onnx_export_of_a_model_without_attention_heads(tmp_path):
    """Hybrid global pruning to 5% removes every head of tiny-random-bert: the graph has no
    attention_mask input (nothing attends), and the export says which inputs it has."""
    pytest.importorskip("onnxruntime")
    path = own_recipe(tmp_path, {"t.csv": T_CSV}, name="nohead")
    data = yaml.safe_load(path.read_text())
    data["pruner"] = {"method": "magnitude", "pattern": "hybrid", "scope": "global", "remaining_pct": 5}
    path.write_text(yaml.safe_dump(data))
    assert run_cli("run", str(path)).returncode == 0
    out = tmp_path / "onnx"
    proc = run_cli("export", str(tmp_path / "results" / "nohead"), "--to", str(out), "--format", "onnx",
                   "--no-latency")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "heads per layer [0, 0]" in " ".join(proc.stdout.split())
    assert json.loads((out / "onnx_config.json").read_text())["inputs"] == ["input_ids", "token_type_ids"]


# -- a parallel sweep stopped: no worker outlives it -----------------------------------------------


def _workers_of(pid: int) -> list[int]:
    """The sweep's worker processes (multiprocessing spawn children of ``pid``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find the workers")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_stopped_parallel_sweep_leaves_no_worker_running(tmp_path, sig):

    from movprune.training import checkpoint

    path = own_recipe(tmp_path, {"t.csv": T_CSV}, max_steps=100000)
    sweep_dir = tmp_path / "results" / "own"
    runs = [sweep_dir / "magnitude-r10-s0", sweep_dir / "magnitude-r20-s0"]
    proc = subprocess.Popen([sys.executable, "-m", "movprune", "sweep", str(path), "--jobs", "2",
                             "--sparsity", "10,20", "--pruners", "magnitude"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "400"})
    workers: list[int] = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not all(
                (r / "metrics.jsonl").exists() for r in runs):
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        workers = _workers_of(proc.pid)
        assert len(workers) == 2
        proc.send_signal(getattr(signal, sig))
        _, stderr = proc.communicate(timeout=180)
        deadline = time.time() + 120
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not [w for w in workers if _alive(w)], "a worker outlived the sweep"
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
    for r in runs:  # each run saved where it was, to be resumed
        assert checkpoint.latest(r) is not None and not (r / "result.json").exists()
    if sig == "SIGTERM":
        assert proc.returncode == 143
        assert "interrupted: sweep stopped by SIGTERM: magnitude-r" in stderr
        assert "resume with: movprune sweep" in stderr
        assert "Traceback" not in stderr


def test_resume_data_check_compares_content(tmp_path):
    """The same bytes at another path are the same data; other bytes, or a file no longer read, are not."""
    from movprune.errors import DataError
    from movprune.training import resume_checks as checkpoint

    ckpt = tmp_path / "step-2"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text(json.dumps({"data_sha256": {"/a/t.csv": "ab" * 32}}))
    checkpoint.check_same_data(ckpt, {"/a/t.csv": "ab" * 32})
    checkpoint.check_same_data(ckpt, {"/b/t.csv": "ab" * 32})
    with pytest.raises(DataError, match=r"cannot resume: /a/t.csv changed \(SHA-256 abababababab… then, "
                                        r"cdcdcdcdcdcd… now"):
        checkpoint.check_same_data(ckpt, {"/a/t.csv": "cd" * 32})
    with pytest.raises(DataError, match="cannot resume: /a/t.csv is gone or no longer read"):
        checkpoint.check_same_data(ckpt, {})


def test_sweep_again_finishes_an_interrupted_forced_rerun(tmp_path):
    """``sweep --force`` stopped mid-run prints the same sweep command to go on: that command
    finishes the forced re-run instead of skipping the old result as finished."""
    from movprune.run_folder import MARKER_FILE

    path = own_recipe(tmp_path, {"t.csv": T_CSV})
    args = ["sweep", str(path), "--sparsity", "10", "--pruners", "magnitude"]
    assert run_cli(*args).returncode == 0
    run_dir = tmp_path / "results" / "own" / "magnitude-r10-s0"
    old = (run_dir / "result.json").stat()
    staging = run_dir.parent / ".magnitude-r10-s0.staging"  # as a forced re-run killed before its first checkpoint
    staging.mkdir()
    (staging / MARKER_FILE).write_text("")
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 to run, 0 finished earlier" in proc.stderr
    new = (run_dir / "result.json").stat()  # published anew (a rename: another file); finished_at has whole seconds
    assert (new.st_ino, new.st_mtime_ns) != (old.st_ino, old.st_mtime_ns)
    assert not staging.exists()


@pytest.mark.parametrize("damage", ["old format", "pruner state of another shape"])
def test_a_checkpoint_that_does_not_fit_is_one_line(tmp_path, damage):
    from movprune.training import checkpoint

    path, run_dir = _killed_own_run(tmp_path, 5)
    for step in (2, 4):
        folder = run_dir / "checkpoints" / f"step-{step}"
        (folder / checkpoint.MANIFEST).unlink()  # as in checkpoints written before it existed
        if damage == "old format":
            state = json.loads((folder / "trainer_state.json").read_text())
            state["format_version"] = 1
            (folder / "trainer_state.json").write_text(json.dumps(state))
        else:
            state = checkpoint.read_state(folder, checkpoint.PRUNER_STATE)
            state.pop("current_step")
            checkpoint.write_state(folder, checkpoint.PRUNER_STATE, state)
    proc = run_cli("run", str(path), "--resume")
    expected = "checkpoint format 1 is not 2" if damage == "old format" else "does not fit this run"
    one_error_line(proc, expected)
    assert "--force" in proc.stderr
