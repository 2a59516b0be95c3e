"""GLUE sentence and sentence-pair classification (and STS-B regression): presets of the
``text_classification`` / ``regression`` families (:class:`SequenceTask`) with their own data source.

Data comes from the Hugging Face Hub (``nyu-mll/glue``) or from a folder in the original GLUE
layout (``<data_dir>/<TASK>/train.tsv``, ``dev.tsv``, ...), read with the same columns and label
ids as the Hub so both sources give identical examples.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from movprune.errors import DataError
from movprune.tasks.base import Task, file_fingerprint, load_hub_split, slice_split, split_name

# Re-exported: the metrics lived here before the families shared them.
from movprune.tasks.metrics import accuracy, f1_binary, matthews_correlation, pearson, spearmanr  # noqa: F401
from movprune.tasks.sequence import SequenceTask


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
    #: Class names in id order, as the Hub's ClassLabel (None: regression).
    label_names: tuple[str, ...] | None
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
             lambda r: {"sentence": r["sentence"].strip(), "label": int(r["label"])},
             label_names=("negative", "positive")),
    GlueSpec("cola", "CoLA", ("sentence",), 2, ("matthews_correlation",),
             {"train": "train.tsv", "validation": "dev.tsv"},
             lambda r: {"sentence": r[3], "label": int(r[1])},
             label_names=("unacceptable", "acceptable"), has_header=False),
    GlueSpec("mrpc", "MRPC", ("sentence1", "sentence2"), 2, ("accuracy", "f1"),
             {"train": "train.tsv", "validation": "dev.tsv"},
             _pair("sentence1", "sentence2", "#1 String", "#2 String", "Quality", int),
             label_names=("not_equivalent", "equivalent")),
    GlueSpec("qqp", "QQP", ("question1", "question2"), 2, ("accuracy", "f1"),
             {"train": "train.tsv", "validation": "dev.tsv"},
             _pair("question1", "question2", "question1", "question2", "is_duplicate", int),
             label_names=("not_duplicate", "duplicate")),
    GlueSpec("stsb", "STS-B", ("sentence1", "sentence2"), 1, ("pearson", "spearmanr"),
             {"train": "train.tsv", "validation": "dev.tsv"},
             _pair("sentence1", "sentence2", "sentence1", "sentence2", "score", float),
             label_names=None),
    GlueSpec("mnli", "MNLI", ("premise", "hypothesis"), 3, ("accuracy",),
             {"train": "train.tsv", "validation_matched": "dev_matched.tsv",
              "validation_mismatched": "dev_mismatched.tsv"},
             _pair("premise", "hypothesis", "sentence1", "sentence2", "gold_label", _NLI3),
             label_names=("entailment", "neutral", "contradiction"),
             eval_splits=(("validation_matched", ""), ("validation_mismatched", "_mm"))),
    GlueSpec("qnli", "QNLI", ("question", "sentence"), 2, ("accuracy",),
             {"train": "train.tsv", "validation": "dev.tsv"},
             _pair("question", "sentence", "question", "sentence", "label", _NLI2),
             label_names=("entailment", "not_entailment")),
    GlueSpec("rte", "RTE", ("sentence1", "sentence2"), 2, ("accuracy",),
             {"train": "train.tsv", "validation": "dev.tsv"},
             _pair("sentence1", "sentence2", "sentence1", "sentence2", "label", _NLI2),
             label_names=("entailment", "not_entailment")),
]}


def read_glue_tsv(path: Path, spec: GlueSpec) -> Dataset:
    """Read one GLUE TSV file (byte-order mark, quotes and CoLA's missing header handled)."""
    rows: list[dict[str, Any]] = []
    lineno = 0
    # GLUE files contain bare quotes inside sentences: no quote processing.
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None) if spec.has_header else None
            for lineno, fields in enumerate(reader, start=2 if header else 1):
                if not fields:
                    continue
                record = dict(zip(header, fields)) if header else fields
                try:
                    row = spec.parse_row(record)
                except (KeyError, IndexError, ValueError) as e:
                    raise DataError(f"{path}:{lineno}: cannot read this {spec.folder} row ({e!r}); "
                                    "is this the original GLUE file?") from None
                if spec.num_labels > 1 and not 0 <= row["label"] < spec.num_labels:
                    raise DataError(f"{path}:{lineno}: label {row['label']} is out of range for "
                                    f"{spec.name} (0 .. {spec.num_labels - 1}); fix or remove the row")
                rows.append(row)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text near line {lineno + 1} ({e.reason}); is this the original "
                        "GLUE file?") from None
    except csv.Error as e:
        raise DataError(f"{path}:{lineno + 1}: not a tab-separated file ({e}); is this the original "
                        "GLUE file?") from None
    if not rows:
        raise DataError(f"{path}: no rows found (the file is empty or holds only a header); point "
                        f"data_dir at the GLUE layout <data_dir>/{spec.folder}/")
    return Dataset.from_list(rows)


class GlueTask(SequenceTask):
    """One GLUE task, configured by a :class:`GlueSpec`."""

    hub_id = "nyu-mll/glue"

    def __init__(self, spec: GlueSpec):
        super().__init__(spec.name, spec.text_keys, spec.metrics, spec.eval_splits)
        self.spec = spec

    def label_names(self) -> list[str] | None:
        return None if self.spec.label_names is None else list(self.spec.label_names)

    def hub_dataset(self) -> tuple[str, str | None]:
        return self.hub_id, self.name

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

    def data_files(self, data_dir: str | None, split: str) -> list[Path]:
        return [] if data_dir is None else [self._file(data_dir, split)]

    def load_split(self, data_dir: str | None, split: str) -> Dataset:
        if data_dir is None:
            ds = load_hub_split(self.name, self.hub_id, self.name, split,
                                "set data_dir to a folder in the GLUE layout")
            ds = ds.select_columns([*self.spec.text_keys, "label"])
            self.check_labels(ds, f"{self.hub_id}/{self.name} split '{split}'")
            return ds
        path = self._file(data_dir, split)
        if not path.is_file():
            raise DataError(self.check_data(data_dir, [split])[0])
        return slice_split(read_glue_tsv(path, self.spec), split)


def glue_tasks() -> dict[str, Task]:
    """Every GLUE task by name."""
    return {name: GlueTask(spec) for name, spec in SPECS.items()}
