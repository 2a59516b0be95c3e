"""The recipe's ``dataset:`` block: where a task family's rows come from and which columns hold what.

Column keys follow Hugging Face's ``run_glue.py`` / ``run_qa.py`` (``text_columns`` ~ the sentence
keys, ``label_column``, ``question_column`` / ``context_column`` / ``answers_column``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from movprune.schema import StrictModel

#: The configurable task families (``task:`` in a recipe with a ``dataset:`` block).
FAMILIES = ("text_classification", "regression", "extractive_qa")
#: File types the ``datasets`` library reads, by suffix: (builder, extra builder arguments).
FILE_TYPES: dict[str, tuple[str, dict[str, str]]] = {
    ".csv": ("csv", {}), ".tsv": ("csv", {"delimiter": "\t"}), ".json": ("json", {}),
    ".jsonl": ("json", {}), ".parquet": ("parquet", {}),
}
#: Each family's metrics, the default ones first.
FAMILY_METRICS: dict[str, tuple[str, ...]] = {
    "text_classification": ("accuracy", "f1", "f1_macro", "matthews_correlation"),
    "regression": ("pearson", "spearmanr"),
    "extractive_qa": ("exact_match", "f1"),
}
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "text_classification": ("accuracy",), "regression": ("pearson", "spearmanr"),
    "extractive_qa": ("exact_match", "f1"),
}
#: Metrics defined for two classes only (the positive class is label id 1).
BINARY_METRICS = ("f1", "matthews_correlation")
_SEQUENCE_KEYS = {"text_columns", "label_column", "label_names"}
_QA_KEYS = {"question_column", "context_column", "answers_column", "id_column"}


class DatasetConfig(StrictModel):
    """Data of a ``text_classification``, ``regression`` or ``extractive_qa`` task."""

    files: dict[str, str] | None = Field(
        default=None, description="split name -> local file (.csv .tsv .json .jsonl .parquet); "
        "relative paths are relative to data_dir, else to the working directory")
    name: str | None = Field(default=None, description="a Hugging Face Hub dataset id (instead of files)")
    config: str | None = Field(default=None, description="the Hub dataset's configuration")
    text_columns: list[str] | None = Field(default=None, description="one or two text columns")
    label_column: str = "label"
    label_names: list[str] | None = Field(
        default=None, description="class names in id order (default: the sorted string labels of "
        "the train split, or the dataset's ClassLabel names)")
    question_column: str = "question"
    context_column: str = "context"
    answers_column: str = Field(default="answers", description="SQuAD format: {text: [...], answer_start: [...]}")
    id_column: str = "id"
    metrics: list[str] | None = Field(default=None, description="null = the family's default")

    def metric_names(self, family: str) -> tuple[str, ...]:
        """The metrics to report, in order."""
        return tuple(self.metrics) if self.metrics else DEFAULT_METRICS[family]


def _foreign_keys(family: str) -> set[str]:
    """The ``dataset:`` keys that do not apply to ``family``."""
    keys = set(_QA_KEYS if family != "extractive_qa" else _SEQUENCE_KEYS)
    if family == "regression":
        keys.add("label_names")
    return keys


def dataset_for_file(family: str, dataset: DatasetConfig) -> dict:
    """The ``dataset:`` block as a saved recipe writes it: every key that applies to ``family``,
    none of another family's (so the file loads again under the same checks)."""
    return {k: v for k, v in dataset.model_dump(mode="json").items() if k not in _foreign_keys(family)}


def check_dataset(family: str, dataset: DatasetConfig) -> list[str]:
    """Problems (one line each, naming the key) of a ``dataset:`` block for ``family``; no data
    is read here."""
    problems = []
    if (dataset.files is None) == (dataset.name is None):
        problems.append("dataset: give either files: {train: ..., validation: ...} (local files) or "
                        "name: (a Hugging Face Hub dataset), not both or neither")
    if dataset.config is not None and dataset.name is None:
        problems.append("dataset.config: only applies with dataset.name (a Hub dataset)")
    for split, path in (dataset.files or {}).items():
        suffix = Path(path).suffix.lower()
        if suffix not in FILE_TYPES:
            problems.append(f"dataset.files.{split}: {path}: file type '{suffix or '(none)'}' is not "
                            f"supported (use one of {', '.join(FILE_TYPES)})")
    # A key of another family left at null or at its default says nothing: files written before
    # the saved recipe kept only the family's keys list every key, and must load again.
    unused = {k for k in _foreign_keys(family) & dataset.model_fields_set
              if getattr(dataset, k) not in (None, DatasetConfig.model_fields[k].default)}
    for key in sorted(unused):
        problems.append(f"dataset.{key}: does not apply to task {family}")
    if family != "extractive_qa":
        n = len(dataset.text_columns or [])
        if n not in (1, 2):
            problems.append(f"dataset.text_columns: give one or two text columns (got "
                            f"{dataset.text_columns!r}), e.g. [sentence] or [sentence1, sentence2]")
    if dataset.label_names is not None:
        if len(set(dataset.label_names)) != len(dataset.label_names) or len(dataset.label_names) < 2:
            problems.append(f"dataset.label_names: need two or more distinct names (got {dataset.label_names})")
    allowed = FAMILY_METRICS[family]
    for metric in dataset.metrics or []:
        if metric not in allowed:
            problems.append(f"dataset.metrics: '{metric}' is not a {family} metric (choose from "
                            f"{', '.join(allowed)})")
    return problems
