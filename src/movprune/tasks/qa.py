"""The ``extractive_qa`` family, as Hugging Face's ``run_qa.py`` (SQuAD v1.1 format).

Preprocessing and post-processing follow ``run_qa.py``: a context longer than one window is cut
into overlapping windows (``doc_stride`` tokens of overlap); each training window's target is the
answer's token span, or the CLS token when the answer is not inside it. At evaluation the best
span over every window of a question (top ``N_BEST`` starts x ends, at most ``MAX_ANSWER_TOKENS``
tokens) is mapped back to the original context text through the offsets. Exact match and F1 are
those of the official v1.1 evaluation script.

:class:`QATask` holds everything but the data source; rows given to it have the columns of
:data:`FEATURES` (``id``, ``title``, ``context``, ``question``, ``answers``).
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from datasets import Dataset, Features, Value
from datasets import Sequence as HFSequence

from movprune.errors import DataError
from movprune.tasks.base import EvalOutput, EvalSet, Task, predict

#: Start and end candidates kept per window (run_qa's ``n_best_size``).
N_BEST = 20
#: Longest answer considered, in tokens (run_qa's ``max_answer_length``).
MAX_ANSWER_TOKENS = 30
PREDICTIONS_FILE = "predictions.json"
_PUNCTUATION = frozenset(string.punctuation)
#: The family's metrics, in report order.
QA_METRICS = ("exact_match", "f1")

FEATURES = Features({
    "id": Value("string"), "title": Value("string"), "context": Value("string"),
    "question": Value("string"),
    "answers": {"text": HFSequence(Value("string")), "answer_start": HFSequence(Value("int32"))},
})


# ------------------------------------------------------------------------------------------------
# Official v1.1 metrics (same normalisation and arithmetic as evaluate-v1.1.py)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token-level F1 (in [0, 1]) between the normalised strings' bags of words."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Mapping[str, str], references: Iterable[tuple[str, Sequence[str]]]) -> dict[str, float]:
    """``exact_match`` and ``f1`` in %, each the max over a question's gold answers, averaged over
    the questions in ``references`` ((id, gold answers) pairs); a question with no prediction
    scores 0, as in the official script."""
    em = f1 = 0.0
    total = 0
    for qid, golds in references:
        total += 1
        if qid not in predictions:
            continue
        pred = predictions[qid]
        em += max(exact_match_score(pred, g) for g in golds)
        f1 += max(f1_score(pred, g) for g in golds)
    if total == 0:
        raise DataError("SQuAD evaluation: no questions to evaluate")
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total}


# ------------------------------------------------------------------------------------------------
# Preprocessing


def _encode(tokenizer, questions: list[str], contexts: list[str], max_len: int, doc_stride: int):
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("extractive question answering needs a fast (Rust) tokenizer for offset mappings; this model's "
                        "tokenizer is not one")
    # Leading whitespace in some questions only wastes window tokens (as run_qa notes).
    questions = [q.lstrip() for q in questions]
    # The Rust tokenizer panics (uncatchably for `except Exception`) when the overlap does not fit
    # beside the question: check first and say which setting to change.
    longest = max(len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"])
    room = max_len - longest - tokenizer.num_special_tokens_to_add(pair=True)
    if doc_stride >= room:
        raise DataError(f"question answering: with max_seq_length {max_len}, a window has room for only "
                        f"{room} context tokens beside a {longest}-token question, so doc_stride "
                        f"({doc_stride}) must be below {room}; lower train.doc_stride or raise "
                        "train.max_seq_length")
    return tokenizer(questions, contexts, truncation="only_second", max_length=max_len,
                     stride=doc_stride, return_overflowing_tokens=True,
                     return_offsets_mapping=True, padding=False)


def _context_span(sequence_ids: list[int | None]) -> tuple[int, int]:
    """First and last token index of the context (sequence 1) in a window."""
    first = sequence_ids.index(1)
    last = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
    return first, last


def train_features(batch: dict[str, list], tokenizer, max_len: int, doc_stride: int) -> dict[str, list]:
    """Windows of a batch of examples with ``start_positions`` / ``end_positions`` (the first gold
    answer's token span, or the CLS index when the window does not hold the whole answer)."""
    enc = _encode(tokenizer, batch["question"], batch["context"], max_len, doc_stride)
    sample_map = enc.pop("overflow_to_sample_mapping")
    offset_map = enc.pop("offset_mapping")
    starts, ends = [], []
    for i, offsets in enumerate(offset_map):
        ids = enc["input_ids"][i]
        cls_index = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        answers = batch["answers"][sample_map[i]]
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        first, last = _context_span(enc.sequence_ids(i))
        if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        tok = first
        while tok <= last and offsets[tok][0] <= start_char:
            tok += 1
        starts.append(tok - 1)
        tok = last
        while tok >= first and offsets[tok][1] >= end_char:
            tok -= 1
        ends.append(tok + 1)
    enc["start_positions"] = starts
    enc["end_positions"] = ends
    return dict(enc)


def eval_features(batch: dict[str, list], tokenizer, max_len: int, doc_stride: int) -> dict[str, list]:
    """Windows of a batch of examples with their question ``example_id`` and ``offset_mapping``
    (character spans in the context; None for question and special tokens)."""
    enc = _encode(tokenizer, batch["question"], batch["context"], max_len, doc_stride)
    sample_map = enc.pop("overflow_to_sample_mapping")
    example_ids, offsets_out = [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        seq = enc.sequence_ids(i)
        example_ids.append(batch["id"][sample_map[i]])
        offsets_out.append([list(o) if s == 1 else None for o, s in zip(offsets, seq)])
    enc["example_id"] = example_ids
    enc["offset_mapping"] = offsets_out
    return dict(enc)


# ------------------------------------------------------------------------------------------------
# Post-processing


def best_answers(examples: Dataset, features: Dataset, start_logits: list[np.ndarray],
                 end_logits: list[np.ndarray], n_best: int = N_BEST,
                 max_answer_tokens: int = MAX_ANSWER_TOKENS) -> dict[str, str]:
    """{question id: answer text}: the highest start+end logit span over all windows of each
    question, among spans inside the context, end >= start, at most ``max_answer_tokens`` long.

    ``start_logits[i]`` / ``end_logits[i]`` are feature ``i``'s logits over its own tokens.
    """
    by_example: dict[str, list[int]] = defaultdict(list)
    for i, eid in enumerate(features["example_id"]):
        by_example[eid].append(i)
    all_offsets = features["offset_mapping"]
    predictions: dict[str, str] = {}
    for example in examples:
        best_score, best_text = -np.inf, ""
        for fi in by_example.get(example["id"], []):
            s_log, e_log, offsets = start_logits[fi], end_logits[fi], all_offsets[fi]
            n = min(len(offsets), len(s_log))
            s_top = np.argsort(s_log[:n])[::-1][:n_best]
            e_top = np.argsort(e_log[:n])[::-1][:n_best]
            for s in s_top:
                if offsets[s] is None:
                    continue
                for e in e_top:
                    if offsets[e] is None or e < s or e - s + 1 > max_answer_tokens:
                        continue
                    score = float(s_log[s] + e_log[e])
                    if score > best_score:
                        best_score = score
                        best_text = example["context"][offsets[s][0]:offsets[e][1]]
        predictions[example["id"]] = best_text
    return predictions


# ------------------------------------------------------------------------------------------------


class QATask(Task):
    """Extractive question answering, scored by exact match and F1 (``metrics``: a subset)."""

    default_max_seq_length = 384
    family = "extractive_qa"

    def __init__(self, name: str, metrics: tuple[str, ...] = QA_METRICS):
        self.name = name
        self.metric_names = tuple(metrics)

    def tokenize(self, examples, tokenizer, *, max_seq_length: int, doc_stride: int,
                 train: bool) -> Dataset:
        max_len = max_seq_length
        fn = train_features if train else eval_features
        return examples.map(fn, batched=True, remove_columns=examples.column_names,
                            fn_kwargs={"tokenizer": tokenizer, "max_len": max_len,
                                       "doc_stride": doc_stride},
                            desc=f"tokenizing {self.name} ({'train' if train else 'eval'})")

    def build_model(self, model):
        from transformers import AutoModelForQuestionAnswering

        return model.instantiate(AutoModelForQuestionAnswering)

    def outputs_for_distillation(self, outputs: Any):
        return (outputs.start_logits, outputs.end_logits)

    def evaluate(self, model, evalset: EvalSet, tokenizer, batch_size: int, autocast) -> EvalOutput:
        outs = predict(model, evalset.features, self.collate(tokenizer), batch_size, autocast)
        # Batches are padded to their longest window: cut each row back to its own length.
        lengths = [len(ids) for ids in evalset.features["input_ids"]]
        starts: list[np.ndarray] = []
        ends: list[np.ndarray] = []
        for out in outs:
            s = out.start_logits.float().cpu().numpy()
            e = out.end_logits.float().cpu().numpy()
            for row in range(s.shape[0]):
                n = lengths[len(starts)]
                starts.append(s[row, :n])
                ends.append(e[row, :n])
        predictions = best_answers(evalset.examples, evalset.features, starts, ends)
        refs = zip(evalset.examples["id"], (a["text"] for a in evalset.examples["answers"]))
        metrics = squad_metrics(predictions, refs)
        metrics = {k + evalset.suffix: metrics[k] for k in self.metric_names}
        return EvalOutput(metrics, artifacts={PREDICTIONS_FILE: predictions})
