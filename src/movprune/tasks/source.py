"""Where an own-data task's rows come from: local files (CSV, TSV, JSON, JSON Lines, Parquet) or a
Hub dataset, read with ``datasets``; empty files and TSV rows merged by a stray quote are refused
where the file is read, and rows are named by file and line in messages.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from datasets import Dataset, Value

from movprune.errors import DataError
from movprune.tasks import rows
from movprune.tasks.base import cache_root, file_fingerprint, load_hub_split, slice_indices, slice_split, split_name
from movprune.tasks.config import FILE_TYPES, DatasetConfig


class DatasetSource:
    """Reads the splits of a :class:`DatasetConfig` (whole splits memoised, then sliced)."""

    def __init__(self, task: str, dataset: DatasetConfig):
        self.task = task
        self.dataset = dataset
        self._loaded: dict[tuple[str | None, str], Dataset] = {}
        d = dataset
        #: Columns read as text whatever they look like ("007" stays "007" in a CSV file).
        self.text_columns = ((d.id_column, d.question_column, d.context_column) if task == "extractive_qa"
                             else tuple(d.text_columns or ()))

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
        self._check_not_empty(path, split, builder)
        if builder == "csv":
            kwargs = {**kwargs, "converters": {c: str for c in self.text_columns}}
        try:
            ds = load_dataset(builder, data_files=str(path), split="train",
                              cache_dir=str(cache_root() / "datasets"), **kwargs)
        except Exception as e:  # datasets/pyarrow raise many types; all mean "cannot read this file"
            raise DataError(f"dataset.files.{split}: cannot read {path} as {builder} "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        if len(ds) == 0:
            raise DataError(f"dataset.files.{split}: {path} has no rows; add one row per example")
        if suffix == ".tsv":
            self._check_tsv_rows(ds, path, split)
        return ds

    @staticmethod
    def _check_not_empty(path: Path, split: str, builder: str) -> None:
        """An empty file, or a CSV/TSV of only a header line, named as such (datasets says
        'Instruction train corresponds to no data')."""
        if builder == "parquet":
            return
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        lines = [line for line in head.splitlines() if line.strip()]
        if not lines:
            raise DataError(f"dataset.files.{split}: {path} is empty: it has no rows; give a file with one "
                            "row per example" + (" under a header line" if builder == "csv" else ""))
        if builder == "csv" and len(lines) == 1 and len(head) < (1 << 16):
            raise DataError(f"dataset.files.{split}: {path} holds only its header line, no rows; add one "
                            "row per example below it")

    def _check_tsv_rows(self, ds: Dataset, path: Path, split: str) -> None:
        """A TSV field holding a line break or a tab is one double quote (\") that opened a quoted
        field and merged the lines up to the next quote into one row: refused, with its line."""
        for column in ds.column_names:
            if ds.features[column] != Value("string") and ds.features[column] != Value("large_string"):
                continue
            for i, v in enumerate(ds[column]):
                if isinstance(v, str) and ("\n" in v or "\t" in v or "\r" in v):
                    raise DataError(f"dataset.files.{split}: {self._line_text(ds, path, i)}: column '{column}' "
                                    "starts with a double quote (\") that is closed lines later, so these lines "
                                    "were read as one row; remove the stray quote (or quote the field in full)")

    @staticmethod
    def _line_text(full: Dataset, path: Path, index: int) -> str:
        """Where row ``index`` (of the whole file) is: ``FILE line N``."""
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            return f"{path} line {index + 1}"
        if suffix in (".csv", ".tsv"):
            # A quoted field may span lines: count them in the rows before.
            before = full.select(range(index)) if index else None
            extra = 0
            if before is not None:
                for column in full.column_names:
                    extra += sum(v.count("\n") for v in before[column] if isinstance(v, str))
            return f"{path} line {index + 2 + extra}"
        return f"{path} row {index + 1}"

    def where(self, data_dir: str | None, split: str, positions: list[int]) -> str:
        """Where the rows at ``positions`` of ``split`` (a slicing spec is allowed) are, for messages:
        ``FILE line N`` (the first few)."""
        shown = positions[:rows.SHOWN_ROWS]
        more = f" (and {len(positions) - len(shown)} more)" if len(positions) > len(shown) else ""
        if self.dataset.files is None:
            return f"{self.describe(data_dir, split)} split '{split}' example(s) {', '.join(map(str, shown))}{more}"
        path = self.path(data_dir, split)
        full = self._loaded[(str(path), split_name(split))]
        indices = slice_indices(len(full), split)
        places = [self._line_text(full, path, indices[i] if indices is not None else i) for i in shown]
        if len(places) == 1 and not more:
            return places[0]
        where, _, unit = places[0].rpartition(" ")[0].rpartition(" ")
        return f"{where} {unit}s {', '.join(p.rsplit(' ', 1)[1] for p in places)}{more}"

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
