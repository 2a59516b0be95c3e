"""GLUE sentence and sentence-pair classification (and STS-B regression).

Data comes from the Hugging Face Hub (``nyu-mll/glue``) or from a folder in the original GLUE
layout (``<data_dir>/<TASK>/train.tsv``, ``dev.tsv``, ...), read with the same columns and label
ids as the Hub so both sources give identical examples.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from movprune.errors import DataError
from movprune.tasks.base import (
    EvalOutput,
    EvalSet,
    Task,
    file_fingerprint,
    load_hub_split,
    predict,
    slice_split,
    split_name,
)


@dataclass(frozen=True)
class GlueSpec:
    """What differs between GLUE tasks."""

    name: str
    folder: str  # folder in the GLUE layout
    text_keys: tuple[str, ...]  # Hub column names of the input text(s)
    num_labels: int  # 1 = regression
    metrics: tuple[str, ...]
    files: dict[str, str]  # split name -> file in the folder
    parse_row: Callable[[dict[str, str] | list[str]], dict[str, Any] | None]
    has_header: bool = True
    eval_splits: tuple[tuple[str, str], ...] = (("validation", ""),)


def _label_map(names: list[str]) -> Callable[[str], int]:
    table = {n: i for i, n in enumerate(names)}
    return lambda s: table[s.strip()]


_NLI3 = _label_map(["entailment", "neutral", "contradiction"])
_NLI2 = _label_map(["entailment", "not_entailment"])


def _pair(k1: str, k2: str, c1: str, c2: str, label_col: str, conv) -> Callable:
    return lambda r: {k1: r[c1], k2: r[c2], "label": conv(r[label_col])}


SPECS: dict[str, GlueSpec] = {s.name: s for s in [
    GlueSpec("sst2", "SST-2", ("sentence",), 2, ("accuracy",),
             {"train": "train.tsv", "validation": "dev.tsv"},
             lambda r: {"sentence": r["sentence"].strip(), "label": int(r["label"])}),
    GlueSpec("cola", "CoLA", ("sentence",), 2, ("matthews_correlation",),
             {"train": "train.tsv", "validation": "dev.tsv"},
             lambda r: {"sentence": r[3], "label": int(r[1])}, has_header=False),
    GlueSpec("mrpc", "MRPC", ("sentence1", "sentence2"), 2, ("accuracy", "f1"),
             {"train": "train.tsv", "validation": "dev.tsv"},
             _pair("sentence1", "sentence2", "#1 String", "#2 String", "Quality", int)),
    GlueSpec("qqp", "QQP", ("question1", "question2"), 2, ("accuracy", "f1"),
             {"train": "train.tsv", "validation": "dev.tsv"},
             _pair("question1", "question2", "question1", "question2", "is_duplicate", int)),
    GlueSpec("stsb", "STS-B", ("sentence1", "sentence2"), 1, ("pearson", "spearmanr"),
             {"train": "train.tsv", "validation": "dev.tsv"},
             _pair("sentence1", "sentence2", "sentence1", "sentence2", "score", float)),
    GlueSpec("mnli", "MNLI", ("premise", "hypothesis"), 3, ("accuracy",),
             {"train": "train.tsv", "validation_matched": "dev_matched.tsv",
              "validation_mismatched": "dev_mismatched.tsv"},
             _pair("premise", "hypothesis", "sentence1", "sentence2", "gold_label", _NLI3),
             eval_splits=(("validation_matched", ""), ("validation_mismatched", "_mm"))),
    GlueSpec("qnli", "QNLI", ("question", "sentence"), 2, ("accuracy",),
             {"train": "train.tsv", "validation": "dev.tsv"},
             _pair("question", "sentence", "question", "sentence", "label", _NLI2)),
    GlueSpec("rte", "RTE", ("sentence1", "sentence2"), 2, ("accuracy",),
             {"train": "train.tsv", "validation": "dev.tsv"},
             _pair("sentence1", "sentence2", "sentence1", "sentence2", "label", _NLI2)),
]}


def read_glue_tsv(path: Path, spec: GlueSpec) -> Dataset:
    """Read one GLUE TSV file (byte-order mark, quotes and CoLA's missing header handled)."""
    rows: list[dict[str, Any]] = []
    # GLUE files contain bare quotes inside sentences: no quote processing.
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader) if spec.has_header else None
        for lineno, fields in enumerate(reader, start=2 if header else 1):
            if not fields:
                continue
            record = dict(zip(header, fields)) if header else fields
            try:
                rows.append(spec.parse_row(record))
            except (KeyError, IndexError, ValueError) as e:
                raise DataError(f"{path}:{lineno}: cannot read this {spec.folder} row ({e!r}); "
                                "is this the original GLUE file?") from None
    if not rows:
        raise DataError(f"{path}: no rows found")
    return Dataset.from_list(rows)


# ------------------------------------------------------------------------------------------------
# Metrics, in % (names as Hugging Face `evaluate` reports them)


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    """% of predictions equal to the label."""
    return 100.0 * float(np.mean(preds == labels))


def f1_binary(preds: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class (label 1), in %."""
    tp = float(np.sum((preds == 1) & (labels == 1)))
    fp = float(np.sum((preds == 1) & (labels == 0)))
    fn = float(np.sum((preds == 0) & (labels == 1)))
    return 0.0 if tp == 0 else 100.0 * 2 * tp / (2 * tp + fp + fn)


def matthews_correlation(preds: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation coefficient of binary predictions, x100 (0 when undefined)."""
    tp = float(np.sum((preds == 1) & (labels == 1)))
    tn = float(np.sum((preds == 0) & (labels == 0)))
    fp = float(np.sum((preds == 1) & (labels == 0)))
    fn = float(np.sum((preds == 0) & (labels == 1)))
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else 100.0 * (tp * tn - fp * fn) / denom


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation, x100."""
    x = x - x.mean()
    y = y - y.mean()
    denom = math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y)))
    return 0.0 if denom == 0 else 100.0 * float(np.sum(x * y)) / denom


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank (as scipy's rankdata)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return ranks


def spearmanr(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation, x100."""
    return pearson(_ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64)))


_METRICS = {"accuracy": accuracy, "f1": f1_binary, "matthews_correlation": matthews_correlation,
            "pearson": pearson, "spearmanr": spearmanr}


class GlueTask(Task):
    """One GLUE task, configured by a :class:`GlueSpec`."""

    hub_id = "nyu-mll/glue"

    def __init__(self, spec: GlueSpec):
        self.spec = spec
        self.name = spec.name
        self.metric_names = tuple(m + s for _, s in spec.eval_splits for m in spec.metrics)

    @property
    def is_regression(self) -> bool:  # type: ignore[override]
        return self.spec.num_labels == 1

    def default_eval_splits(self) -> list[tuple[str, str]]:
        return list(self.spec.eval_splits)

    def _file(self, data_dir: str, split: str) -> Path:
        name = split_name(split)
        if name not in self.spec.files:
            raise DataError(f"task {self.name}: no split '{name}' in the GLUE layout "
                            f"(available: {', '.join(self.spec.files)})")
        return Path(data_dir) / self.spec.folder / self.spec.files[name]

    def check_data(self, data_dir: str | None, splits: list[str]) -> list[str]:
        if data_dir is None:
            return []
        problems, missing = [], []
        for split in splits:
            try:
                path = self._file(data_dir, split)
            except DataError as e:
                problems.append(str(e))
                continue
            if not path.is_file():
                missing.append(path)
        if missing:
            folder = missing[0].parent
            names = ", ".join(p.name for p in missing)
            shown = str(missing[0]) if len(missing) == 1 else f"{folder}/{{{names}}}"
            problems.append(f"data_dir: {shown} not found (data_dir must hold the GLUE layout "
                            f"<data_dir>/{self.spec.folder}/{missing[0].name}; set data_dir: null to "
                            "use the Hugging Face Hub)")
        return problems

    def data_fingerprint(self, data_dir: str | None, split: str) -> str:
        if data_dir is None:
            return f"hub:{self.hub_id}/{self.name}:{split}"
        return file_fingerprint(self._file(data_dir, split), split)

    def load_split(self, data_dir: str | None, split: str) -> Dataset:
        if data_dir is None:
            ds = load_hub_split(self.name, self.hub_id, self.name, split,
                                "set data_dir to a folder in the GLUE layout")
            return ds.select_columns([*self.spec.text_keys, "label"])
        path = self._file(data_dir, split)
        if not path.is_file():
            raise DataError(self.check_data(data_dir, [split])[0])
        return slice_split(read_glue_tsv(path, self.spec), split)

    def tokenize(self, examples, tokenizer, *, max_seq_length: int, doc_stride: int,
                 train: bool) -> Dataset:
        max_len = max_seq_length
        keys = self.spec.text_keys

        def encode(batch):
            texts = [batch[k] for k in keys]
            enc = tokenizer(*texts, truncation=True, max_length=max_len)
            enc["labels"] = batch["label"]
            return enc

        feats = examples.map(encode, batched=True, remove_columns=examples.column_names,
                             desc=f"tokenizing {self.name}")
        if self.is_regression:
            from datasets import Value

            feats = feats.cast_column("labels", Value("float32"))
        return feats

    def build_model(self, model):
        from transformers import AutoModelForSequenceClassification

        kwargs: dict[str, Any] = {"num_labels": self.spec.num_labels}
        if self.is_regression:
            kwargs["problem_type"] = "regression"
        return model.instantiate(AutoModelForSequenceClassification, **kwargs)

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray, suffix: str = "") -> dict[str, float]:
        """The task's metrics (in %) from model outputs and gold labels."""
        preds = logits.reshape(-1) if self.is_regression else logits.argmax(-1)
        return {m + suffix: _METRICS[m](preds, labels) for m in self.spec.metrics}

    def evaluate(self, model, evalset: EvalSet, tokenizer, batch_size: int, autocast) -> EvalOutput:
        outs = predict(model, evalset.features, self.collate(tokenizer), batch_size, autocast)
        logits = torch.cat([o.logits.float().cpu() for o in outs]).numpy()
        labels = np.asarray(evalset.features["labels"])
        return EvalOutput(self.compute_metrics(logits, labels, evalset.suffix))


def glue_tasks() -> dict[str, Task]:
    """Every GLUE task by name."""
    return {name: GlueTask(spec) for name, spec in SPECS.items()}
