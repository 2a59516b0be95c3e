"""A recipe's data: its task's splits loaded, sliced and tokenised (tokenisation cached)."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from datasets import Dataset

from movprune.errors import DataError
from movprune.recipe import Recipe
from movprune.tasks.base import (
    PREPROCESSING_VERSION,
    EvalSet,
    Task,
    TaskData,
    cached,
    file_sha256,
    tokenizer_fingerprint,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


#: Splits read recently, so that checking a recipe's data before training and preparing it
#: afterwards (or the runs of a sweep) read each file once. Keyed by the data's fingerprint.
_RECENT: OrderedDict[tuple[str, str | None, str, str], Dataset] = OrderedDict()
_RECENT_SIZE = 4


def load_examples(task: Task, data_dir: str | None, split: str) -> Dataset:
    """``task.load_split``, remembered for the last few splits; an empty split is a :class:`DataError`."""
    # Keyed by the task object, not its name: a family task learns its data folder (and so its
    # label names) from loading, so a new instance of it must load for itself. Presets are shared
    # instances, so their check before training and the training itself read each file once.
    key = (task, data_dir, split, task.data_fingerprint(data_dir, split))
    if key in _RECENT:
        _RECENT.move_to_end(key)
        return _RECENT[key]
    examples = task.load_split(data_dir, split)
    if len(examples) == 0:
        raise DataError(f"task {task.name}: split '{split}' has no examples (an empty file or slice); "
                        "widen the slice, e.g. 'train[:1000]' or 'validation[:50%]'")
    _RECENT[key] = examples
    while len(_RECENT) > _RECENT_SIZE:
        _RECENT.popitem(last=False)
    return examples


def data_digests(task: Task, recipe: Recipe) -> dict[str, str]:
    """The SHA-256 of every local file the recipe's splits are read from (path -> hex digest): a
    checkpoint keeps them, so that a resume on changed data is refused."""
    digests: dict[str, str] = {}
    for split in [recipe.train_split, *(s for s, _ in task.evaluation_splits(recipe.eval_split))]:
        for path in task.data_files(recipe.data_dir, split):
            if str(path) not in digests and path.is_file():
                digests[str(path)] = file_sha256(path)
    return digests


def check_data(task: Task, recipe: Recipe) -> None:
    """Read every split the recipe needs and check it (decodable, labels in range, not empty)
    before any training; raises :class:`DataError`."""
    key = "eval_split" if recipe.eval_split else "the task's evaluation split"
    evals = [(key, s) for s, _ in task.evaluation_splits(recipe.eval_split)]
    for name, split in [("train_split", recipe.train_split), *evals]:
        try:
            load_examples(task, recipe.data_dir, split)
        except DataError as e:
            raise DataError(f"{name} '{split}': {e}") from None


def prepare_data(task: Task, recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> TaskData:
    """Load, slice and tokenise the recipe's training and evaluation splits (tokenisation cached)."""
    evals_wanted = task.evaluation_splits(recipe.eval_split)
    tok_fp = tokenizer_fingerprint(tokenizer)

    def features(split: str, train: bool, limit: int | None) -> tuple[Dataset, Dataset]:
        examples = load_examples(task, recipe.data_dir, split)
        if limit is not None and limit < len(examples):
            examples = examples.select(range(limit))
        key = {
            "task": task.name, "split": split, "train": train, "limit": limit,
            "data": task.data_fingerprint(recipe.data_dir, split), "tokenizer": tok_fp,
            "max_seq_length": recipe.train.max_seq_length or task.default_max_seq_length,
            "doc_stride": recipe.train.doc_stride, "version": PREPROCESSING_VERSION,
        }
        feats = cached(key, lambda: task.tokenize(
            examples, tokenizer, max_seq_length=key["max_seq_length"], doc_stride=key["doc_stride"],
            train=train))
        return examples, feats

    _, train = features(recipe.train_split, True, recipe.train.max_train_samples)
    evals = []
    for spec, suffix in evals_wanted:
        examples, feats = features(spec, False, recipe.train.max_eval_samples)
        evals.append(EvalSet(split=spec, suffix=suffix, examples=examples, features=feats))
    return TaskData(train=train, evals=evals)
