"""The configurable task families: ``text_classification``, ``regression`` and ``extractive_qa``
on any local files (CSV, TSV, JSON, JSON Lines, Parquet) or Hub dataset, read with ``datasets``.

A ``dataset:`` block (:class:`DatasetConfig`) names the source and the columns; everything after
reading (tokenisation, head, metrics) is the shared family code in ``sequence.py`` / ``qa.py``.
Class labels follow ``run_glue.py``: string labels get ids in sorted order (or the order of
``label_names``), integer labels are ids; the label set is the ``train`` split's, and every split's
labels are mapped by their value as text (the number 1 and the text "1" are the same class). Before
training, every split is checked row by row: no empty text, no label missing, outside the classes,
fractional or of mixed kinds (text and numbers), no regression target that is not finite; the
message names the file and lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset

from movprune.errors import DataError
from movprune.tasks import rows
from movprune.tasks.base import split_name
from movprune.tasks.config import BINARY_METRICS, DatasetConfig
from movprune.tasks.qa import FEATURES, QATask
from movprune.tasks.sequence import SequenceTask
from movprune.tasks.source import DatasetSource

#: The split whose labels define the classes (as run_glue.py's ``raw_datasets["train"]``).
LABELS_SPLIT = "train"


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
        feature = train.features[self.dataset.label_column]
        if isinstance(feature, ClassLabel):
            return list(feature.names)
        values = self._checked_labels(train, data_dir, LABELS_SPLIT)
        if all(isinstance(v, str) for v in values):
            return sorted(set(values))
        return [str(i) for i in range(int(max(values)) + 1)]

    def _checked_labels(self, ds: Dataset, data_dir: str | None, split: str) -> list[Any]:
        """The label values of ``split``: none missing, not strings and numbers mixed, numbers
        whole and >= 0 (class ids); else a :class:`DataError` naming the rows."""
        column = self.dataset.label_column
        values = ds[column]
        if isinstance(ds.features[column], ClassLabel):
            return values
        where = lambda bad: self.source.where(data_dir, split, bad)  # noqa: E731
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            raise DataError(f"dataset.label_column: {where(missing)}: no label in column '{column}'; give "
                            "every row a label or remove it")
        mixed = rows.mixed_kinds(values)
        if mixed:
            raise DataError(f"dataset.label_column: column '{column}' mixes text labels ({where(mixed[0])}) "
                            f"with numbers ({where(mixed[1])}); write every label the same way, e.g. all as "
                            "text")
        bad = rows.not_class_id_rows(values)
        if bad:
            raise DataError(f"dataset.label_column: {where(bad)}: label {values[bad[0]]!r} in column "
                            f"'{column}' is not a class (class ids are whole numbers 0, 1, ...); for scores "
                            "use task: regression")
        return values

    def _label_ids(self, ds: Dataset, data_dir: str | None, split: str) -> list[int]:
        """Class ids of the rows of ``split``, every split mapped the same way: a label is the class
        of the same name (the number 1 and the text "1" are both class "1"); a number that names no
        class is a class id when ``dataset.label_names`` gives the classes in id order. A label
        outside the classes is an error."""
        names = self.label_names() or []
        values = self._checked_labels(ds, data_dir, split)
        class_label = isinstance(ds.features[self.dataset.label_column], ClassLabel)
        table = {n: i for i, n in enumerate(names)}
        by_id = self.dataset.label_names is not None or class_label
        ids: list[int | None] = []
        for v in values:
            key = rows.label_key(v)
            if class_label:  # ids already (a Hub test split's -1 is outside them)
                ids.append(v if 0 <= v < len(names) else None)
            elif key in table:
                ids.append(table[key])
            elif by_id and not isinstance(v, str) and 0 <= int(v) < len(names):
                ids.append(int(v))
            else:
                ids.append(None)
        unknown = [i for i, x in enumerate(ids) if x is None]
        if unknown:
            given = "dataset.label_names" if by_id else "the train split"
            shown = sorted({rows.label_key(values[i]) for i in unknown})
            raise DataError(f"dataset: label{'s' if len(shown) > 1 else ''} {', '.join(shown[:5])} "
                            f"in split '{split}' ({self.source.where(data_dir, split, unknown)}) not among the "
                            f"classes of {given} "
                            f"({', '.join(names[:10])}); fix the data or give dataset.label_names")
        return [int(x) for x in ids if x is not None]

    def _texts(self, ds: Dataset, data_dir: str | None, split: str) -> dict[str, list[str]]:
        """The text columns of ``split``; an empty cell or a null is an error naming its rows."""
        out = {}
        for key in self.text_keys:
            values = ds[key]
            empty = rows.empty_text_rows(values)
            if empty:
                raise DataError(f"dataset.text_columns: {self.source.where(data_dir, split, empty)}: column "
                                f"'{key}' is empty; give every row its text or remove the row")
            out[key] = rows.as_text(values)
        return out

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

    def data_files(self, data_dir: str | None, split: str) -> list[Path]:
        if self.dataset.files is None:
            return []
        return [self.source.path(data_dir, s) for s in dict.fromkeys([split] if self.regression
                                                                     else [split, LABELS_SPLIT])]

    def load_split(self, data_dir: str | None, split: str) -> Dataset:
        if data_dir != self._data_dir:
            self._data_dir, self._names = data_dir, None
        ds = self.source.load(data_dir, split)
        columns: dict[str, Any] = self._texts(ds, data_dir, split)
        if self.regression:
            values = ds[self.dataset.label_column]
            bad = rows.not_finite_rows(values)
            if bad:
                raise DataError(f"dataset.label_column: {self.source.where(data_dir, split, bad)}: target "
                                f"{values[bad[0]]!r} in column '{self.dataset.label_column}' is not a finite "
                                "number (task regression); fix or remove the row")
            columns["label"] = [float(v) for v in values]
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

    def data_files(self, data_dir: str | None, split: str) -> list[Path]:
        return [] if self.dataset.files is None else [self.source.path(data_dir, split)]

    def load_split(self, data_dir: str | None, split: str) -> Dataset:
        ds = self.source.load(data_dir, split)
        d = self.dataset
        n = len(ds)
        try:
            answers = [{"text": list(a["text"]), "answer_start": [int(s) for s in a["answer_start"]]}
                       for a in ds[d.answers_column]]
            rows_ = {"id": [str(i) for i in ds[d.id_column]], d.context_column: ds[d.context_column],
                     d.question_column: ds[d.question_column]}
            self._check_rows(rows_, answers, data_dir, split)
            out = Dataset.from_dict({
                "id": rows_["id"], "title": [str(t) for t in ds["title"]] if "title" in ds.column_names else [""] * n,
                "context": rows.as_text(ds[d.context_column]), "question": rows.as_text(ds[d.question_column]),
                "answers": answers}, features=FEATURES)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"dataset.answers_column: column '{d.answers_column}' of "
                            f"{self.source.describe(data_dir, split)} must hold SQuAD-format answers "
                            f"{{text: [...], answer_start: [...]}} ({type(e).__name__}: {e})") from None
        return out

    def _check_rows(self, given: dict[str, list], answers: list[dict], data_dir: str | None, split: str) -> None:
        """Every question has a context; the ids of an evaluation split are unique (predictions are
        kept by id); a training answer is where its ``answer_start`` says (it is the target)."""
        d, where = self.dataset, lambda bad: self.source.where(data_dir, split, bad)
        for key, column in (("context_column", d.context_column), ("question_column", d.question_column)):
            empty = rows.empty_text_rows(given[column])
            if empty:
                raise DataError(f"dataset.{key}: {where(empty)}: column '{column}' is empty; give every "
                                "question its text and context, or remove the row")
        train = split_name(split) == LABELS_SPLIT
        if not train:
            first: dict[str, int] = {}
            for i, qid in enumerate(given["id"]):
                if qid in first:
                    raise DataError(f"dataset.id_column: id '{qid}' is used twice ({where([first[qid], i])}); "
                                    "predictions are kept by id, so give every question its own id")
                first[qid] = i
            return
        unanswered = [i for i, a in enumerate(answers) if not a["text"]]
        if unanswered:
            raise DataError(f"dataset.answers_column: {where(unanswered)}: a training question has no answer "
                            "(extractive_qa is SQuAD v1.1-style: every question has one)")
        misplaced = [i for i, a in enumerate(answers) for text, start in zip(a["text"], a["answer_start"])
                     if given[d.context_column][i][start:start + len(text)] != text]
        if misplaced:
            a = answers[misplaced[0]]
            raise DataError(f"dataset.answers_column: {where(sorted(set(misplaced)))}: the answer "
                            f"{a['text'][0]!r} is not at answer_start {a['answer_start'][0]} of its context; "
                            "answer_start is the answer's character offset in the context: fix it")


def build_family_task(family: str, dataset: DatasetConfig) -> SequenceTask | QATask:
    """The task of ``family`` reading ``dataset``."""
    if family == "extractive_qa":
        return ExtractiveQATask(dataset)
    return TextClassificationTask(family, dataset)
