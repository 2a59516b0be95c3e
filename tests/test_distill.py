"""Distillation: the loss against hand computations, teacher resolution and its errors, the cached
automatic teacher, and distilled runs end to end on the SST-2 fixture."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from movprune import pruners, results, tasks
from movprune.errors import ModelError
from movprune.recipe import Recipe, validate_recipe
from movprune.training import distill
from movprune.training.loop import run

from conftest import run_cli, tiny_recipe_dict

# ------------------------------------------------------------------------------------------------
# The loss


def _softmax(values, temperature):
    exps = [math.exp(v / temperature) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _hand_kl(student_rows, teacher_rows, temperature):
    """KL(teacher || student) of the tempered softmaxes, per row, averaged, times T^2."""
    per_row = []
    for s, t in zip(student_rows, teacher_rows):
        p_s, p_t = _softmax(s, temperature), _softmax(t, temperature)
        per_row.append(sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s)))
    return sum(per_row) / len(per_row) * temperature ** 2


STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[0.5, 0.5, 2.0], [1.0, 1.0, 1.0]]


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_term_equals_hand_computation(temperature):
    got = distill.distillation_loss((torch.tensor(STUDENT),), (torch.tensor(TEACHER),), temperature,
                                    regression=False)
    assert got.item() == pytest.approx(_hand_kl(STUDENT, TEACHER, temperature), rel=1e-6)


def test_kl_worked_example_by_hand():
    # One row, two classes, T = 1: p_t = (1/2, 1/2); student logits (0, ln 3) -> p_s = (1/4, 3/4).
    # KL = 1/2 ln((1/2)/(1/4)) + 1/2 ln((1/2)/(3/4)) = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3).
    got = distill.kl_divergence(torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[0.0, 0.0]]), 1.0)
    assert got.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)


def test_several_logits_tensors_are_averaged():
    # SQuAD-style (start, end): the term is the mean of the two per-tensor terms.
    start_s, start_t = [[0.3, 1.2, -0.5, 2.0]], [[1.0, 0.0, 0.0, 3.0]]
    end_s, end_t = [[2.0, 0.0, 1.0, -1.0]], [[-1.0, 0.5, 2.5, 0.0]]
    got = distill.distillation_loss((torch.tensor(start_s), torch.tensor(end_s)),
                                    (torch.tensor(start_t), torch.tensor(end_t)), 2.0, regression=False)
    expected = (_hand_kl(start_s, start_t, 2.0) + _hand_kl(end_s, end_t, 2.0)) / 2
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_positions_both_models_mask_with_minus_inf_contribute_nothing():
    inf = float("inf")
    s = torch.tensor([[0.3, 1.2, -0.5, -inf, -inf]])
    t = torch.tensor([[1.0, 0.0, 0.0, -inf, -inf]])
    got = distill.kl_divergence(s, t, 2.0)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(_hand_kl([[0.3, 1.2, -0.5]], [[1.0, 0.0, 0.0]], 2.0), rel=1e-6)


def test_gradient_to_student_logits_is_t_times_probability_difference():
    # d/dz_s [T^2 * mean_rows KL] = T * (p_s - p_t) / rows.
    temperature = 2.0
    s = torch.tensor(STUDENT, requires_grad=True)
    distill.kl_divergence(s, torch.tensor(TEACHER), temperature).backward()
    for row, (srow, trow) in enumerate(zip(STUDENT, TEACHER)):
        p_s, p_t = _softmax(srow, temperature), _softmax(trow, temperature)
        expected = [temperature * (a - b) / len(STUDENT) for a, b in zip(p_s, p_t)]
        assert s.grad[row].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_regression_uses_mean_squared_error_without_temperature():
    s, t = [[1.5], [0.0], [4.0]], [[1.0], [2.0], [4.5]]
    expected = ((1.5 - 1.0) ** 2 + (0.0 - 2.0) ** 2 + (4.0 - 4.5) ** 2) / 3
    for temperature in (1.0, 3.0):
        got = distill.distillation_loss((torch.tensor(s),), (torch.tensor(t),), temperature, regression=True)
        assert got.item() == pytest.approx(expected, rel=1e-6)
    assert tasks.get_task("stsb").is_regression and not tasks.get_task("sst2").is_regression


def _tiny(head: str = "seq", **config):
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    from movprune.models import tiny_bert_config

    cfg = tiny_bert_config()
    for k, v in config.items():
        setattr(cfg, k, v)
    torch.manual_seed(0)
    cls = AutoModelForQuestionAnswering if head == "qa" else AutoModelForSequenceClassification
    return cls.from_config(cfg)


def _recipe(tmp_path: Path, task: str = "sst2", **distill_cfg) -> Recipe:
    return validate_recipe(tiny_recipe_dict(tmp_path, task, distill={"teacher": "auto", **distill_cfg}), "test")


def _source() -> distill.TeacherSource:
    return distill.TeacherSource("auto", "auto", "/nowhere", "/nowhere", {"accuracy": 1.0})


def test_student_that_copies_its_teacher_has_zero_distillation_loss(tmp_path):
    teacher = _tiny()
    student = copy.deepcopy(teacher).eval()  # eval: no dropout, so outputs match exactly
    teacher.train()  # the distiller must put it in eval mode itself
    recipe = _recipe(tmp_path, alpha_ce=0.3, alpha_distil=0.7)
    distiller = distill.Distiller(teacher, _source(), recipe, tasks.get_task("sst2"), contextlib.nullcontext)
    torch.manual_seed(1)
    batch = {"input_ids": torch.randint(1000, 2000, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long),
             "labels": torch.tensor([0, 1, 1, 0])}
    out = student(**batch)
    loss, term = distiller.combine(batch, out, out.loss)
    assert abs(term.item()) < 1e-6
    assert loss.item() == pytest.approx(0.3 * out.loss.item() + 0.7 * term.item(), rel=1e-6)
    assert not teacher.training
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())  # the teacher never learns
    assert student.classifier.weight.grad is not None


def test_question_answering_copy_has_zero_loss_over_start_and_end():
    squad = tasks.get_task("squad")
    teacher = _tiny("qa")
    student = copy.deepcopy(teacher).eval()
    batch = {"input_ids": torch.randint(1000, 2000, (3, 20))}
    pair = distill.distillation_loss(squad.outputs_for_distillation(student(**batch)),
                                     squad.outputs_for_distillation(teacher.eval()(**batch)), 2.0, False)
    assert abs(pair.item()) < 1e-6
    other = _tiny("qa")
    torch.manual_seed(5)
    other.qa_outputs.weight.data.normal_()
    assert distill.distillation_loss(squad.outputs_for_distillation(other.eval()(**batch)),
                                     squad.outputs_for_distillation(teacher(**batch)), 2.0, False).item() > 1e-3


# ------------------------------------------------------------------------------------------------
# Resolving a given teacher, and its errors


def _fake_finished_run(folder: Path, task: str, with_model: bool = True) -> Path:
    folder.mkdir(parents=True)
    if with_model:
        _tiny().save_pretrained(folder / "model")
    results.RunResult(task=task, model="tiny-random-bert", pruner="none", target_remaining_pct=None,
                      remaining_pct=100.0, metrics={"accuracy": 77.0}, seed=0, steps=1, train_seconds=0.0,
                      versions={}).save(folder)
    (folder / ".movprune-run").write_text("")
    return folder


def _check(tmp_path: Path, teacher: str) -> None:
    distill.check_teacher(_recipe(tmp_path).model_copy(update={
        "distill": _recipe(tmp_path).distill.model_copy(update={"teacher": teacher})}))


def test_run_folder_teacher_uses_its_model_and_metrics(tmp_path):
    run_dir = _fake_finished_run(tmp_path / "teacher-run", "sst2")
    recipe = _recipe(tmp_path, teacher=str(run_dir))
    source = distill.resolve_given_teacher(recipe)
    assert source.kind == "run"
    assert source.model_path == str((run_dir / "model").resolve())
    assert source.metrics == {"accuracy": 77.0}


@pytest.mark.parametrize("case, fragment", [
    ("missing", "folder not found"),
    ("empty", "neither a movprune run folder"),
    ("unfinished", "has no result.json"),
    ("other-task", "trained on task 'cola'"),
    ("no-model", "has no model/config.json"),
    ("alias", "a built-in base model, not a teacher"),
])
def test_bad_teachers_raise_one_clear_error(tmp_path, case, fragment):
    folder = tmp_path / case if case != "alias" else "minilm-l6"
    if case == "empty":
        folder.mkdir()
    elif case == "unfinished":
        folder.mkdir()
        (folder / "recipe.yaml").write_text("task: sst2\n")
        _tiny().save_pretrained(folder / "model")
    elif case == "other-task":
        _fake_finished_run(folder, "cola")
    elif case == "no-model":
        _fake_finished_run(folder, "sst2", with_model=False)
    with pytest.raises(ModelError, match=fragment) as err:
        _check(tmp_path, str(folder))
    assert len(str(err.value).splitlines()) == 1
    assert str(err.value).startswith(f"distill.teacher '{folder}'")


@pytest.mark.parametrize("teacher_kind, fragment", [
    ("labels3", "its head has 3 labels, the task 'sst2' needs 2"),
    ("qa", "ForQuestionAnswering"),
    ("vocab", "vocabulary"),
])
def test_teacher_with_another_head_is_refused(tmp_path, teacher_kind, fragment):
    folder = tmp_path / "teacher-model"
    model = {"labels3": lambda: _tiny(num_labels=3), "qa": lambda: _tiny("qa"),
             "vocab": lambda: _tiny(vocab_size=1000)}[teacher_kind]()
    model.save_pretrained(folder)
    recipe = _recipe(tmp_path, teacher=str(folder))
    source = distill.resolve_given_teacher(recipe)
    assert source.kind == "model"
    with pytest.raises(ModelError, match=fragment):
        distill.load_teacher(source, recipe, tasks.get_task("sst2"), _tiny(), torch.device("cpu"),
                             contextlib.nullcontext)


@pytest.mark.parametrize("case", ["missing", "other-task"])
def test_cli_bad_teacher_exits_2_with_one_line(write_recipe, tmp_path, case):
    folder = tmp_path / "teacher"
    if case == "other-task":
        _fake_finished_run(folder, "mrpc", with_model=False)
    proc = run_cli("run", str(write_recipe(distill={"teacher": str(folder)})), "--dry-run")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "distill.teacher" in lines[0] and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------
# The automatic teacher


def test_teacher_key_depends_on_what_determines_the_teacher_only(tmp_path):
    base = _recipe(tmp_path)
    key = distill.teacher_key(base)
    same = [
        {"pruner": pruners.pruner_config(method="magnitude", remaining_pct=3)},
        {"distill": base.distill.model_copy(update={"alpha_ce": 0.1, "temperature": 4.0})},
        {"name": "other", "output_dir": str(tmp_path / "elsewhere")},
        {"train": base.train.model_copy(update={"log_every_steps": 1})},
    ]
    for update in same:
        assert distill.teacher_key(base.model_copy(update=update)) == key, update
    different = [
        {"seed": 1}, {"model": "minilm-l6"}, {"task": "cola"}, {"train_split": "train[:50%]"},
        {"train": base.train.model_copy(update={"lr": 5e-4})},
        {"train": base.train.model_copy(update={"max_train_samples": 100})},
    ]
    for update in different:
        assert distill.teacher_key(base.model_copy(update=update)) != key, update
    dense = distill.teacher_recipe(base)
    assert dense.pruner.method == "none" and dense.distill is None
    assert dense.train == base.train and dense.seed == base.seed


def _fake_trainer(calls: list[str], delay: float = 0.0):
    """Writes a finished teacher run folder, as ``train.run`` would, and counts its calls."""

    def train(dense: Recipe) -> None:
        calls.append(dense.run_name)
        time.sleep(delay)
        _fake_finished_run(dense.run_dir, dense.task)

    return train


def test_concurrent_runs_train_the_automatic_teacher_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MOVPRUNE_CACHE", str(tmp_path / "cache"))
    recipe = _recipe(tmp_path)
    calls: list[str] = []
    got: list[distill.TeacherSource] = []
    train = _fake_trainer(calls, delay=0.5)
    threads = [threading.Thread(target=lambda: got.append(distill.auto_teacher(recipe, train)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len({s.location for s in got}) == 1 and len(got) == 3
    entries = [p.name for p in distill.teachers_dir().iterdir() if not p.name.endswith(".lock")]
    assert entries == [distill.teacher_key(recipe)]  # no temporary folder left behind


def test_publishing_keeps_a_teacher_that_another_process_finished_first(tmp_path):
    final = _fake_finished_run(tmp_path / "final", "sst2", with_model=False)
    before = (final / "result.json").stat()
    trained = _fake_finished_run(tmp_path / "trained", "sst2", with_model=False)
    distill.cache._publish(trained, final)
    after = (final / "result.json").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


class _Phases:
    def __init__(self):
        self.phases: list[str] = []

    def on_phase(self, text):
        self.phases.append(text)

    def on_start(self, total_steps, run_dir):
        pass

    def on_step(self, step, values):
        pass

    def on_eval(self, step, metrics):
        pass


def _teacher_phases(obs: _Phases) -> int:
    return sum("training the dense teacher" in p for p in obs.phases)


def test_auto_teacher_is_trained_once_then_reused_by_other_pruners(tmp_path, monkeypatch):
    monkeypatch.setenv("MOVPRUNE_CACHE", str(tmp_path / "cache"))
    first = _recipe(tmp_path / "runs")
    obs = _Phases()
    r1 = run(first, observer=obs)
    assert _teacher_phases(obs) == 1
    cache_dir = Path(r1.distill["teacher"])
    assert cache_dir.parent == distill.teachers_dir() and r1.distill["teacher_kind"] == "auto"
    teacher_result = results.load_result(cache_dir)
    assert teacher_result.pruner == "none" and teacher_result.remaining_pct == 100.0
    assert teacher_result.steps == r1.steps
    assert r1.distill["teacher_metrics"] == teacher_result.metrics
    stamp = (cache_dir / "result.json").stat()

    shared = first.pruner.model_dump(include=set(pruners.BasePrunerConfig.model_fields))
    second = first.model_copy(update={
        "name": "second",
        "pruner": pruners.pruner_config(**{**shared, "method": "magnitude"}),
        "distill": first.distill.model_copy(update={"alpha_ce": 0.2, "alpha_distil": 0.8})})
    obs2 = _Phases()
    r2 = run(second, observer=obs2)
    assert _teacher_phases(obs2) == 0
    assert r2.distill["teacher"] == str(cache_dir)
    again = (cache_dir / "result.json").stat()
    assert (stamp.st_ino, stamp.st_mtime_ns) == (again.st_ino, again.st_mtime_ns)
    assert [p.name for p in distill.teachers_dir().iterdir() if p.is_dir()] == [cache_dir.name]

    # The same teacher given as a plain model folder: its metrics are measured before training,
    # and they equal what the teacher's own run measured on the same evaluation set.
    third = first.model_copy(update={
        "name": "third", "distill": first.distill.model_copy(update={"teacher": str(cache_dir / "model")})})
    r3 = run(third)
    assert r3.distill["teacher_kind"] == "model"
    for name, value in teacher_result.metrics.items():
        assert r3.distill["teacher_metrics"][name] == pytest.approx(value, abs=1e-9)


# ------------------------------------------------------------------------------------------------
# End to end from the command line


def test_cli_distilled_run_on_sst2_records_its_teacher(write_recipe):
    path = write_recipe(distill={"teacher": "auto", "alpha_ce": 0.25, "alpha_distil": 0.75,
                                 "temperature": 3.0})
    proc = run_cli("run", str(path))
    assert proc.returncode == 0, proc.stderr
    recipe = yaml.safe_load(path.read_text())
    run_dir = Path(recipe["output_dir"]) / recipe["name"]
    result = json.loads((run_dir / "result.json").read_text())
    d = result["distill"]
    assert (d["alpha_ce"], d["alpha_distil"], d["temperature"]) == (0.25, 0.75, 3.0)
    teacher = results.load_result(d["teacher"])
    assert teacher.task == "sst2" and teacher.pruner == "none"
    assert d["teacher_metrics"] == teacher.metrics and "accuracy" in d["teacher_metrics"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [4, 8, 12]
    for r in train_rows:  # movement has no penalty: the total is exactly the weighted sum
        assert r["loss_distil"] > 0  # the student is not the teacher: the distillation term is active
        assert r["loss"] == pytest.approx(0.25 * r["loss_task"] + 0.75 * r["loss_distil"], rel=1e-5)


def test_distilled_squad_run_compares_start_and_end_logits(tmp_path, monkeypatch, tiny_squad_dir):
    monkeypatch.setenv("MOVPRUNE_CACHE", str(tmp_path / "cache"))
    data = tiny_recipe_dict(tmp_path / "runs", "squad", distill={"teacher": "auto", "alpha_ce": 0.4,
                                                                  "alpha_distil": 0.6})
    data.update(data_dir=str(tiny_squad_dir), train_split="validation[:96]", eval_split="validation[96:128]")
    data["train"].update(max_steps=6, batch_size=8, max_seq_length=64, doc_stride=32, log_every_steps=3)
    result = run(validate_recipe(data, "test"))
    d = result.distill
    teacher = results.load_result(d["teacher"])
    assert teacher.task == "squad" and teacher.pruner == "none"
    assert d["teacher_metrics"] == teacher.metrics and set(d["teacher_metrics"]) == {"exact_match", "f1"}
    rows = [json.loads(line) for line in (Path(result.run_dir) / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [3, 6]
    for r in train_rows:
        assert r["loss_distil"] > 0
        assert r["loss"] == pytest.approx(0.4 * r["loss_task"] + 0.6 * r["loss_distil"], rel=1e-5)
