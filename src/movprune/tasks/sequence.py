"""The sequence families, as Hugging Face's ``run_glue.py``: one or two texts -> a class
(``text_classification``) or a score (``regression``).

:class:`SequenceTask` holds everything but the data source: tokenisation, the model head (with the
label names in its config), evaluation and metrics. The GLUE presets (``glue.py``) and the
configurable families (``families.py``) differ only in where their rows come from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import Dataset

from movprune.errors import DataError
from movprune.tasks.base import EvalOutput, EvalSet, Task, predict
from movprune.tasks.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS


class SequenceTask(Task):
    """Sentence or sentence-pair classification (``label_names``) or regression (``None``).

    Rows given to :meth:`tokenize` hold the ``text_keys`` columns and ``label`` (class id, or score).
    """

    def __init__(self, name: str, text_keys: tuple[str, ...], metrics: tuple[str, ...],
                 eval_splits: tuple[tuple[str, str], ...] = (("validation", ""),)):
        self.name = name
        self.text_keys = text_keys
        self.metrics = metrics
        self.eval_splits = eval_splits
        self.metric_names = tuple(m + s for _, s in eval_splits for m in metrics)

    def label_names(self) -> list[str] | None:
        """Class names in id order; None for a regression."""
        raise NotImplementedError

    @property
    def is_regression(self) -> bool:  # type: ignore[override]
        return self.label_names() is None

    @property
    def family(self) -> str:  # type: ignore[override]
        return "regression" if self.is_regression else "text_classification"

    def default_eval_splits(self) -> list[tuple[str, str]]:
        return list(self.eval_splits)

    def tokenize(self, examples, tokenizer, *, max_seq_length: int, doc_stride: int,
                 train: bool) -> Dataset:
        keys = self.text_keys

        def encode(batch):
            texts = [batch[k] for k in keys]
            enc = tokenizer(*texts, truncation=True, max_length=max_seq_length)
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

        names = self.label_names()
        kwargs: dict[str, Any]
        if names is None:
            kwargs = {"num_labels": 1, "problem_type": "regression"}
        else:
            # In the config, so that every saved and exported model answers with names.
            kwargs = {"num_labels": len(names), "id2label": dict(enumerate(names)),
                      "label2id": {n: i for i, n in enumerate(names)}}
        return model.instantiate(AutoModelForSequenceClassification, **kwargs)

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray, suffix: str = "") -> dict[str, float]:
        """The task's metrics (in %) from model outputs and gold labels."""
        if self.is_regression:
            return {m + suffix: REGRESSION_METRICS[m](logits.reshape(-1), labels) for m in self.metrics}
        preds = logits.argmax(-1)
        return {m + suffix: CLASSIFICATION_METRICS[m](preds, labels) for m in self.metrics}

    def evaluate(self, model, evalset: EvalSet, tokenizer, batch_size: int, autocast) -> EvalOutput:
        outs = predict(model, evalset.features, self.collate(tokenizer), batch_size, autocast)
        logits = torch.cat([o.logits.float().cpu() for o in outs]).numpy()
        labels = np.asarray(evalset.features["labels"])
        return EvalOutput(self.compute_metrics(logits, labels, evalset.suffix),
                          prediction_counts=self.prediction_counts(logits))

    def check_labels(self, examples: Dataset, where: str) -> None:
        """Raise :class:`DataError` when a class label lies outside the task's classes (GLUE's
        test splits carry -1: they have no labels), before it can fail mid-training."""
        names = self.label_names()
        if names is None or len(examples) == 0:
            return
        labels = np.asarray(examples["label"])
        bad = np.flatnonzero((labels < 0) | (labels >= len(names)))
        if bad.size:
            raise DataError(f"{where}: example {int(bad[0])} has label {int(labels[bad[0]])}, outside "
                            f"{self.name}'s classes 0 .. {len(names) - 1} ({bad.size} such examples; "
                            "a test split has no labels: train and evaluate on labelled splits)")

    def prediction_counts(self, logits: np.ndarray) -> dict[str, int] | None:
        """How often each class was predicted (None for a regression task)."""
        names = self.label_names()
        if names is None:
            return None
        counts = np.bincount(logits.argmax(-1), minlength=len(names))
        return {str(label): int(n) for label, n in enumerate(counts)}
