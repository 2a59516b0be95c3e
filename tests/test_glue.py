"""GLUE files in their original layout, and the metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from movprune.errors import DataError
from movprune.tasks import get_task
from movprune.tasks.glue import SPECS, accuracy, f1_binary, matthews_correlation, pearson, read_glue_tsv, spearmanr


@pytest.mark.full_data
@pytest.mark.parametrize("task, split, rows, first_label", [
    ("sst2", "train", 67349, 0), ("sst2", "validation", 872, 1),
    ("mrpc", "train", 3668, 1), ("mrpc", "validation", 408, 1),
    ("cola", "train", 8551, 1), ("cola", "validation", 1043, 1),
    ("rte", "train", 2490, 1), ("rte", "validation", 277, 1),
    ("stsb", "validation", 1500, 5.0), ("qnli", "validation", 5463, 0),
])
def test_local_files_read_completely_with_hub_labels(glue_dir, task, split, rows, first_label):
    ds = get_task(task).load_split(str(glue_dir), split)
    assert len(ds) == rows
    assert ds[0]["label"] == pytest.approx(first_label)


@pytest.mark.parametrize("task, split, rows, first_label", [
    ("sst2", "train", 320, 0), ("sst2", "validation", 96, 1),
    ("mrpc", "train", 64, 1), ("mrpc", "validation", 48, 1),
    ("cola", "train", 32, 1), ("cola", "validation", 32, 1),
    ("rte", "train", 32, 1), ("rte", "validation", 32, 1),
    ("stsb", "train", 32, 5.0), ("stsb", "validation", 32, 5.0), ("qnli", "validation", 32, 0),
])
def test_every_layout_reads_from_the_checked_in_fixtures(tiny_glue_dir, task, split, rows, first_label):
    ds = get_task(task).load_split(str(tiny_glue_dir), split)
    assert len(ds) == rows
    assert ds[0]["label"] == pytest.approx(first_label)


def test_the_fixtures_keep_the_bom_header_and_the_headerless_cola(tiny_glue_dir):
    mrpc = get_task("mrpc").load_split(str(tiny_glue_dir), "validation")
    assert set(mrpc.column_names) == {"sentence1", "sentence2", "label"}  # the BOM did not break the header
    cola = get_task("cola").load_split(str(tiny_glue_dir), "train")  # no header: the first row is data
    assert cola[0]["sentence"] == "Our friends won't buy this analysis, let alone the next one we propose."


@pytest.mark.full_data
def test_quirks_bom_header_and_headerless_cola(glue_dir):
    mrpc = get_task("mrpc").load_split(str(glue_dir), "validation")
    assert set(mrpc.column_names) == {"sentence1", "sentence2", "label"}  # BOM did not break the header
    assert mrpc[0]["sentence1"].startswith("He said the foodservice pie business")
    cola = get_task("cola").load_split(str(glue_dir), "train")
    assert cola[0]["sentence"] == "Our friends won't buy this analysis, let alone the next one we propose."
    labels = np.asarray(cola["label"])
    assert (labels == 1).sum() == 6023 and (labels == 0).sum() == 2528
    sst = get_task("sst2").load_split(str(glue_dir), "validation")
    assert not sst[0]["sentence"].endswith(" ")
    rte = np.asarray(get_task("rte").load_split(str(glue_dir), "validation")["label"])
    assert (rte == 0).sum() == 146 and (rte == 1).sum() == 131  # entailment = 0, as on the Hub


def test_split_slicing(tiny_glue_dir):
    task = get_task("sst2")
    full = task.load_split(str(tiny_glue_dir), "validation")
    head = task.load_split(str(tiny_glue_dir), "validation[:10%]")
    tail = task.load_split(str(tiny_glue_dir), "validation[10%:]")
    assert len(head) + len(tail) == len(full)
    assert head[0] == full[0] and tail[0] == full[len(head)]
    assert len(task.load_split(str(tiny_glue_dir), "train[:100]")) == 100


def test_malformed_file_names_file_and_line(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\ngood movie \t1\nbad movie \tnot-a-label\n")
    with pytest.raises(DataError, match=r"train.tsv:3"):
        read_glue_tsv(path, SPECS["sst2"])


def test_accuracy_and_f1_by_hand():
    preds = np.array([1, 1, 0, 0, 1, 0])
    labels = np.array([1, 0, 0, 1, 1, 0])
    assert accuracy(preds, labels) == pytest.approx(100 * 4 / 6)
    # tp=2, fp=1, fn=1 -> precision 2/3, recall 2/3, F1 2/3
    assert f1_binary(preds, labels) == pytest.approx(100 * 2 / 3)
    assert f1_binary(np.zeros(3, int), np.array([1, 0, 1])) == 0.0


def test_matthews_by_hand():
    preds = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    labels = np.array([1, 1, 0, 0, 0, 1, 1, 0])
    # tp=3 tn=3 fp=1 fn=1 -> (9-1)/sqrt(4*4*4*4) = 0.5
    assert matthews_correlation(preds, labels) == pytest.approx(50.0)
    assert matthews_correlation(np.ones(4, int), np.array([1, 0, 1, 0])) == 0.0  # undefined -> 0


def test_pearson_and_spearman_by_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(100.0)
    assert pearson(x, -x) == pytest.approx(-100.0)
    # Monotone but not linear: Spearman 100, Pearson below.
    y = x ** 3
    assert spearmanr(x, y) == pytest.approx(100.0)
    assert pearson(x, y) < 100.0
    # Ties get average ranks: ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4].
    a = np.array([1.0, 2.0, 2.0, 3.0])
    b = np.array([1.0, 2.0, 3.0, 4.0])
    ra, rb = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4.0])
    expected = np.corrcoef(ra, rb)[0, 1] * 100
    assert spearmanr(a, b) == pytest.approx(expected)


def test_task_metrics_keys_follow_evaluate_names():
    assert get_task("mnli").metric_names == ("accuracy", "accuracy_mm")
    assert get_task("qqp").metric_names == ("accuracy", "f1")
    assert get_task("cola").metric_names == ("matthews_correlation",)
    assert get_task("stsb").metric_names == ("pearson", "spearmanr")
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert get_task("mrpc").compute_metrics(logits, np.array([1, 1, 1])) == {
        "accuracy": pytest.approx(100 * 2 / 3), "f1": pytest.approx(80.0)}
    stsb = get_task("stsb").compute_metrics(np.array([[1.0], [2.0], [3.0]]), np.array([2.0, 4.0, 6.0]))
    assert stsb["pearson"] == pytest.approx(100.0) and stsb["spearmanr"] == pytest.approx(100.0)


def test_tokenisation_is_cached(write_recipe, monkeypatch):
    from movprune.models import resolve_model
    from movprune.recipe import load_recipe
    from movprune.training.data import prepare_data

    recipe = load_recipe(write_recipe(), ["train.max_train_samples=50", "train.max_eval_samples=20",
                                          "train.max_seq_length=48"])
    task = get_task("sst2")
    tok = resolve_model(recipe.model).tokenizer()
    first = prepare_data(task, recipe, tok)
    calls = []
    monkeypatch.setattr(type(task), "tokenize", lambda *a, **k: calls.append(1))
    second = prepare_data(task, recipe, tok)
    assert calls == []  # nothing tokenised again
    assert second.train["input_ids"] == first.train["input_ids"]
    assert max(len(ids) for ids in first.train["input_ids"]) <= 48
