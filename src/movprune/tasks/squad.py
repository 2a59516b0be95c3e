"""SQuAD v1.1: the ``extractive_qa`` family (:class:`QATask`) preset to the SQuAD data.

Data comes from the Hugging Face Hub (``rajpurkar/squad``) or from a folder holding the official
files ``train-v1.1.json`` / ``dev-v1.1.json``, read into the Hub's columns (``id``, ``title``,
``context``, ``question``, ``answers``) so both sources give identical examples. Preprocessing,
post-processing and metrics are the family's (``qa.py``, as ``run_qa.py`` and the official v1.1
evaluation script).
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset

from movprune.errors import DataError
from movprune.tasks.base import Task, file_fingerprint, load_hub_split, slice_split, split_name

# Re-exported: these lived here before the extractive_qa family shared them.
from movprune.tasks.qa import (  # noqa: F401
    FEATURES,
    MAX_ANSWER_TOKENS,
    N_BEST,
    PREDICTIONS_FILE,
    QATask,
    best_answers,
    eval_features,
    exact_match_score,
    f1_score,
    normalize_answer,
    squad_metrics,
    train_features,
)

#: Split name -> file of the official distribution.
FILES = {"train": "train-v1.1.json", "validation": "dev-v1.1.json"}


# ------------------------------------------------------------------------------------------------
# Data


def read_squad_json(path: Path) -> Dataset:
    """Read an official SQuAD v1.1 JSON file into the Hub's columns, in file order."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        rows = []
        for article in raw["data"]:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    rows.append({
                        "id": qa["id"], "title": article["title"], "context": context,
                        "question": qa["question"],
                        "answers": {"text": [a["text"] for a in qa["answers"]],
                                    "answer_start": [int(a["answer_start"]) for a in qa["answers"]]},
                    })
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: cannot read it as a SQuAD v1.1 file ({type(e).__name__}: {e})") from None
    if not rows:
        raise DataError(f"{path}: no questions found")
    return Dataset.from_list(rows, features=FEATURES)


class SquadTask(QATask):
    """SQuAD v1.1: extractive question answering, scored by exact match and F1."""

    hub_id = "rajpurkar/squad"

    def __init__(self):
        super().__init__("squad")

    def _file(self, data_dir: str, split: str) -> Path:
        name = split_name(split)
        if name not in FILES:
            raise DataError(f"task squad: no split '{name}' in a local SQuAD folder "
                            f"(available: {', '.join(FILES)})")
        return Path(data_dir) / FILES[name]

    def check_data(self, data_dir: str | None, splits: list[str]) -> list[str]:
        if data_dir is None:
            return []
        problems = []
        for split in splits:
            try:
                path = self._file(data_dir, split)
            except DataError as e:
                problems.append(str(e))
                continue
            if not path.is_file():
                problems.append(f"data_dir: {path} not found (data_dir must hold the official "
                                f"{', '.join(FILES.values())}; set data_dir: null to use the Hugging "
                                "Face Hub)")
        return problems

    def data_fingerprint(self, data_dir: str | None, split: str) -> str:
        if data_dir is None:
            return f"hub:{self.hub_id}:{split}"
        return file_fingerprint(self._file(data_dir, split), split)

    def data_files(self, data_dir: str | None, split: str) -> list[Path]:
        return [] if data_dir is None else [self._file(data_dir, split)]

    def load_split(self, data_dir: str | None, split: str) -> Dataset:
        if data_dir is None:
            ds = load_hub_split(self.name, self.hub_id, None, split,
                                "set data_dir to a folder holding dev-v1.1.json / train-v1.1.json")
            return ds.select_columns(list(FEATURES)).cast(FEATURES)
        path = self._file(data_dir, split)
        if not path.is_file():
            raise DataError(self.check_data(data_dir, [split])[0])
        return slice_split(read_squad_json(path), split)


def squad_tasks() -> dict[str, Task]:
    """The SQuAD task by name."""
    return {"squad": SquadTask()}
