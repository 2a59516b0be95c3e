"""The configurable task families: ``text_classification``, ``regression`` and ``extractive_qa``
on any local files (CSV, TSV, JSON, JSON Lines, Parquet) or Hub dataset, read with ``datasets``.

A ``dataset:`` block (:class:`DatasetConfig`) names the source and the columns; everything after
reading (tokenisation, head, metrics) is the shared family code in ``sequence.py`` / ``qa.py``.
Class labels follow ``run_glue.py``: string labels get ids in sorted order (or the order of
``label_names``), integer labels are ids; the label set is the ``train`` split's, and a label of
another split outside it is an error before training.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, Value

from movprune.errors import DataError
from movprune.tasks.base import cache_root, file_fingerprint, load_hub_split, slice_split, split_name
from movprune.tasks.config import BINARY_METRICS, FILE_TYPES, DatasetConfig
from movprune.tasks.qa import FEATURES, QATask
from movprune.tasks.sequence import SequenceTask

#: The split whose labels define the classes (as run_glue.py's ``raw_datasets["train"]``).
LABELS_SPLIT = "train"


class DatasetSource:
    """Reads the splits of a :class:`DatasetConfig` (whole splits memoised, then sliced)."""

    def __init__(self, task: str, dataset: DatasetConfig):
        self.task = task
        self.dataset = dataset
        self._loaded: dict[tuple[str | None, str], Dataset] = {}

    def path(self, data_dir: str | None, split: str) -> Path:
        """The local file of ``split`` (a slicing spec is allowed)."""
        files = self.dataset.files or {}
        name = split_name(split)
        if name not in files:
            raise DataError(f"dataset.files: no file for split '{name}' (files are given for: "
                            f"{', '.join(files) or 'none'}); add '{name}: <file>' or change the recipe's "
                            "train_split / eval_split")
        path = Path(files[name]).expanduser()
        if not path.is_absolute() and data_dir is not None:
            path = Path(data_dir) / path
        return path

    def describe(self, data_dir: str | None, split: str) -> str:
        """Where ``split`` comes from, for messages."""
        if self.dataset.files is None:
            return f"{self.dataset.name}" + (f" ({self.dataset.config})" if self.dataset.config else "")
        return str(self.path(data_dir, split))

    def load(self, data_dir: str | None, split: str) -> Dataset:
        """The rows of ``split`` (Hugging Face slicing syntax) as ``datasets`` reads them."""
        if self.dataset.files is None:
            key = (None, split)
            if key not in self._loaded:
                self._loaded[key] = load_hub_split(self.task, self.dataset.name or "", self.dataset.config,
                                                   split, "use dataset.files with local files instead")
            return self._loaded[key]
        path = self.path(data_dir, split)
        key = (str(path), split_name(split))
        if key not in self._loaded:
            self._loaded[key] = self._read_file(path, split_name(split))
        return slice_split(self._loaded[key], split)

    def _read_file(self, path: Path, split: str) -> Dataset:
        from datasets import load_dataset

        if not path.is_file():
            raise DataError(f"dataset.files.{split}: {path} not found")
        suffix = path.suffix.lower()
        if suffix not in FILE_TYPES:
            raise DataError(f"dataset.files.{split}: {path}: file type '{suffix}' is not supported "
                            f"(use one of {', '.join(FILE_TYPES)})")
        builder, kwargs = FILE_TYPES[suffix]
        try:
            ds = load_dataset(builder, data_files=str(path), split="train",
                              cache_dir=str(cache_root() / "datasets"), **kwargs)
        except Exception as e:  # datasets/pyarrow raise many types; all mean "cannot read this file"
            raise DataError(f"dataset.files.{split}: cannot read {path} as {builder} "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        if len(ds) == 0:
            raise DataError(f"dataset.files.{split}: {path} has no rows")
        return ds

    def hub_dataset(self) -> tuple[str, str | None] | None:
        """(Hub id, configuration) when the data comes from the Hub."""
        return None if self.dataset.name is None else (self.dataset.name, self.dataset.config)

    def fingerprint(self, data_dir: str | None, splits: list[str]) -> str:
        """Changes whenever the config or the source data of ``splits`` changes."""
        parts: list[str] = [json.dumps(self.dataset.model_dump(mode="json"), sort_keys=True)]
        for split in splits:
            if self.dataset.files is None:
                parts.append(f"hub:{self.dataset.name}/{self.dataset.config}:{split}")
            else:
                parts.append(file_fingerprint(self.path(data_dir, split), split))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def check_columns(self, data_dir: str | None, split: str, columns: dict[str, str]) -> list[str]:
        """Problems with ``{recipe key: column}`` against the columns of ``split``."""
        try:
            ds = self.load(data_dir, split)
        except DataError as e:
            return [str(e)]
        problems = []
        for key, column in columns.items():
            if column not in ds.column_names:
                close = ", ".join(ds.column_names)
                problems.append(f"dataset.{key}: no column '{column}' in {self.describe(data_dir, split)} "
                                f"(columns: {close})")
        return problems


class TextClassificationTask(SequenceTask):
    """``text_classification`` (``regression=False``) or ``regression`` on a :class:`DatasetConfig`."""

    def __init__(self, family: str, dataset: DatasetConfig):
        super().__init__(family, tuple(dataset.text_columns or ()), dataset.metric_names(family))
        self.dataset = dataset
        self.regression = family == "regression"
        self.source = DatasetSource(family, dataset)
        self._data_dir: str | None = None
        self._names: list[str] | None = None

    @property
    def is_regression(self) -> bool:  # type: ignore[override]
        return self.regression

    # -- labels -------------------------------------------------------------------------------
    def _string_labels(self, ds: Dataset) -> bool:
        feature = ds.features[self.dataset.label_column]
        return isinstance(feature, Value) and feature.dtype in ("string", "large_string")

    def label_names(self) -> list[str] | None:
        if self.regression:
            return None
        if self._names is None:
            self._names = self._read_label_names(self._data_dir)
        return self._names

    def _read_label_names(self, data_dir: str | None) -> list[str]:
        if self.dataset.label_names is not None:
            return list(self.dataset.label_names)
        train = self.source.load(data_dir, LABELS_SPLIT)
        column = self.dataset.label_column
        feature = train.features[column]
        if isinstance(feature, ClassLabel):
            return list(feature.names)
        values = train.unique(column)
        if None in values:
            raise DataError(f"dataset.label_column: column '{column}' of "
                            f"{self.source.describe(data_dir, LABELS_SPLIT)} has empty labels")
        if self._string_labels(train):
            return sorted(values)
        if not all(isinstance(v, int) or (isinstance(v, float) and v.is_integer()) for v in values) \
                or min(values) < 0:
            raise DataError(f"dataset.label_column: column '{column}' of "
                            f"{self.source.describe(data_dir, LABELS_SPLIT)} holds numbers that are not "
                            "class ids 0, 1, ...; for scores use task: regression")
        return [str(i) for i in range(int(max(values)) + 1)]

    def _label_ids(self, ds: Dataset, data_dir: str | None, split: str) -> list[int]:
        """Class ids of the rows of ``split``; a label outside the train split's classes is an error."""
        names = self.label_names() or []
        labels = ds[self.dataset.label_column]
        given = "dataset.label_names" if self.dataset.label_names is not None else "the train split"
        if self._string_labels(ds):
            table = {n: i for i, n in enumerate(names)}
            unknown = sorted({str(v) for v in labels if v not in table})
        else:
            unknown = sorted({str(v) for v in labels if v is None or not 0 <= int(v) < len(names)})
            table = None
        if unknown:
            raise DataError(f"dataset: label{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:5])} in "
                            f"split '{split}' ({self.source.describe(data_dir, split)}) not among the "
                            f"classes of {given} ({', '.join(names[:10])}); fix the data or give "
                            "dataset.label_names")
        return [table[v] for v in labels] if table is not None else [int(v) for v in labels]

    # -- data ---------------------------------------------------------------------------------
    def hub_dataset(self) -> tuple[str, str | None] | None:
        return self.source.hub_dataset()

    def check_data(self, data_dir: str | None, splits: list[str]) -> list[str]:
        self._data_dir, self._names = data_dir, None
        columns = {f"text_columns[{i}]": c for i, c in enumerate(self.text_keys)}
        columns["label_column"] = self.dataset.label_column
        problems = []
        for split in dict.fromkeys([LABELS_SPLIT, *splits] if not self.regression else splits):
            problems += self.source.check_columns(data_dir, split, columns)
        if problems:
            return problems
        try:
            if self.regression:
                for split in splits:
                    self.load_split(data_dir, split)
                return []
            names = self.label_names() or []
            bad = [m for m in self.metrics if m in BINARY_METRICS]
            if bad and len(names) != 2:
                return [f"dataset.metrics: {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} defined for two "
                        f"classes only; the data has {len(names)} "
                        f"({', '.join(names[:10])}); use accuracy or f1_macro"]
            for split in splits:
                self.load_split(data_dir, split)
        except DataError as e:
            return [str(e)]
        return []

    def data_fingerprint(self, data_dir: str | None, split: str) -> str:
        return self.source.fingerprint(data_dir, [split] if self.regression else [split, LABELS_SPLIT])

    def load_split(self, data_dir: str | None, split: str) -> Dataset:
        if data_dir != self._data_dir:
            self._data_dir, self._names = data_dir, None
        ds = self.source.load(data_dir, split)
        columns: dict[str, Any] = {k: ds[k] for k in self.text_keys}
        if self.regression:
            try:
                columns["label"] = [float(v) for v in ds[self.dataset.label_column]]
            except (TypeError, ValueError) as e:
                raise DataError(f"dataset.label_column: column '{self.dataset.label_column}' of "
                                f"{self.source.describe(data_dir, split)} must hold numbers for task "
                                f"regression ({e})") from None
        else:
            columns["label"] = self._label_ids(ds, data_dir, split)
        return Dataset.from_dict(columns)


class ExtractiveQATask(QATask):
    """``extractive_qa`` on a :class:`DatasetConfig` whose answers are in SQuAD format."""

    def __init__(self, dataset: DatasetConfig):
        super().__init__("extractive_qa", dataset.metric_names("extractive_qa"))
        self.dataset = dataset
        self.source = DatasetSource("extractive_qa", dataset)

    def hub_dataset(self) -> tuple[str, str | None] | None:
        return self.source.hub_dataset()

    def _columns(self) -> dict[str, str]:
        d = self.dataset
        return {"id_column": d.id_column, "question_column": d.question_column,
                "context_column": d.context_column, "answers_column": d.answers_column}

    def check_data(self, data_dir: str | None, splits: list[str]) -> list[str]:
        problems = []
        for split in splits:
            problems += self.source.check_columns(data_dir, split, self._columns())
        if problems:
            return problems
        try:
            for split in splits:
                self.load_split(data_dir, split)
        except DataError as e:
            return [str(e)]
        return []

    def data_fingerprint(self, data_dir: str | None, split: str) -> str:
        return self.source.fingerprint(data_dir, [split])

    def load_split(self, data_dir: str | None, split: str) -> Dataset:
        ds = self.source.load(data_dir, split)
        d = self.dataset
        n = len(ds)
        try:
            answers = [{"text": list(a["text"]), "answer_start": [int(s) for s in a["answer_start"]]}
                       for a in ds[d.answers_column]]
            rows = {"id": [str(i) for i in ds[d.id_column]],
                    "title": [str(t) for t in ds["title"]] if "title" in ds.column_names else [""] * n,
                    "context": ds[d.context_column], "question": ds[d.question_column], "answers": answers}
            out = Dataset.from_dict(rows, features=FEATURES)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"dataset.answers_column: column '{d.answers_column}' of "
                            f"{self.source.describe(data_dir, split)} must hold SQuAD-format answers "
                            f"{{text: [...], answer_start: [...]}} ({type(e).__name__}: {e})") from None
        if any(not a["text"] for a in answers) and split_name(split) == LABELS_SPLIT:
            raise DataError(f"dataset.answers_column: a training question in "
                            f"{self.source.describe(data_dir, split)} has no answer (extractive_qa "
                            "is SQuAD v1.1-style: every question has one)")
        return out


def build_family_task(family: str, dataset: DatasetConfig) -> SequenceTask | QATask:
    """The task of ``family`` reading ``dataset``."""
    if family == "extractive_qa":
        return ExtractiveQATask(dataset)
    return TextClassificationTask(family, dataset)
