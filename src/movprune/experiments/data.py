"""A recipe's data: its task's splits loaded, sliced and tokenised (tokenisation cached)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from datasets import Dataset

from movprune.recipe import Recipe
from movprune.tasks.base import PREPROCESSING_VERSION, EvalSet, Task, TaskData, cached, tokenizer_fingerprint

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def prepare_data(task: Task, recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> TaskData:
    """Load, slice and tokenise the recipe's training and evaluation splits (tokenisation cached)."""
    evals_wanted = ([(recipe.eval_split, "")] if recipe.eval_split else task.default_eval_splits())
    tok_fp = tokenizer_fingerprint(tokenizer)

    def features(split: str, train: bool, limit: int | None) -> tuple[Dataset, Dataset]:
        examples = task.load_split(recipe.data_dir, split)
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
