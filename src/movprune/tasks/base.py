"""The task interface: data, preprocessing, model head, evaluation and metrics of a task family.

The training loop only talks to a :class:`Task`; nothing outside ``movprune.tasks`` branches on a
task's name.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from datasets import Dataset, ReadInstruction, load_from_disk

from movprune import distributed
from movprune.errors import DataError, ResultExistsError
from movprune.io import staged_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from movprune.models import ResolvedModel

#: Bump when any task's preprocessing changes, so cached tokenisations are rebuilt.
PREPROCESSING_VERSION = 1


@dataclass
class EvalSet:
    """One evaluation split: the raw examples and the features the model sees.

    ``suffix`` is appended to metric names when a task evaluates several splits (MNLI's ``_mm``).
    """

    split: str
    suffix: str
    examples: Dataset
    features: Dataset


@dataclass
class EvalOutput:
    """Metrics (in %) and files a task writes into the run folder (name -> JSON-able object).

    ``prediction_counts`` (classification tasks) is the histogram of predicted classes, every
    class listed, so that a model predicting one class for everything can be flagged.
    """

    metrics: dict[str, float]
    artifacts: dict[str, Any] = field(default_factory=dict)
    prediction_counts: dict[str, int] | None = None


@dataclass
class TaskData:
    """Tokenised training features and the evaluation sets."""

    train: Dataset
    evals: list[EvalSet]


class Task:
    """Base class of a task family; one instance per task name."""

    name: ClassVar[str]
    #: The family this task belongs to (``text_classification``, ``regression``, ``extractive_qa``).
    family: ClassVar[str] = ""
    #: Metric names in report order; the first is the headline metric.
    metric_names: ClassVar[tuple[str, ...]]
    default_max_seq_length: ClassVar[int] = 128

    # -- data ---------------------------------------------------------------------------------
    def default_eval_splits(self) -> list[tuple[str, str]]:
        """(split spec, metric suffix) pairs evaluated when the recipe's ``eval_split`` is null."""
        return [("validation", "")]

    def evaluation_splits(self, eval_split: str | None) -> list[tuple[str, str]]:
        """(split spec, metric suffix) of every set a run evaluates: the recipe's ``eval_split`` when
        set, else :meth:`default_eval_splits`. The one rule: training, the teacher cache and the
        model card all ask it."""
        return [(eval_split, "")] if eval_split else self.default_eval_splits()

    def check_data(self, data_dir: str | None, splits: list[str]) -> list[str]:
        """Problems (one line each) with the local files the splits need; none for the Hub."""
        return []

    def hub_dataset(self) -> tuple[str, str | None] | None:
        """(Hub id, configuration) of the dataset this task is about, when it has one (model cards)."""
        hub_id = getattr(self, "hub_id", None)
        return (hub_id, None) if hub_id else None

    def load_split(self, data_dir: str | None, split: str) -> Dataset:
        """Raw examples of ``split`` (Hugging Face slicing syntax, e.g. ``validation[:80%]``)."""
        raise NotImplementedError

    def data_fingerprint(self, data_dir: str | None, split: str) -> str:
        """A string that changes whenever the source data of ``split`` changes."""
        return f"hub:{split}"

    def data_files(self, data_dir: str | None, split: str) -> list[Path]:
        """The local files ``split`` is read from (none for the Hub)."""
        return []

    def tokenize(self, examples: Dataset, tokenizer: PreTrainedTokenizerBase, *, max_seq_length: int,
                 doc_stride: int, train: bool) -> Dataset:
        """Model features for ``examples`` (train: with labels / targets); ``doc_stride`` is the
        overlap of a long context's windows, for tasks that split contexts."""
        raise NotImplementedError

    def collate(self, tokenizer: PreTrainedTokenizerBase):
        """A collate function for the features (dynamic padding by default)."""
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    # -- model --------------------------------------------------------------------------------
    def build_model(self, model: ResolvedModel) -> PreTrainedModel:
        """The model with this task's head."""
        raise NotImplementedError

    def outputs_for_distillation(self, outputs: Any) -> tuple[torch.Tensor, ...]:
        """The logits a teacher and a student are compared on."""
        return (outputs.logits,)

    #: True when the head is a regression (distillation then uses a mean-squared error).
    is_regression: ClassVar[bool] = False

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, model: PreTrainedModel, evalset: EvalSet, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int, autocast) -> EvalOutput:
        """Metrics of ``model`` on one evaluation set."""
        raise NotImplementedError


# ------------------------------------------------------------------------------------------------
# Helpers shared by task families


def file_fingerprint(path: Path, split: str) -> str:
    """Identity of a local data file for the tokenisation cache: a hash of its content, and the
    split. Size and modification time are not enough: a file rewritten within the same second (or
    copied with its times kept) would reuse another file's tokens."""
    return f"sha256:{file_sha256(path)}:{split}"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's content, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_hub_split(task: str, hub_id: str, config: str | None, split: str, offline_fix: str) -> Dataset:
    """``datasets.load_dataset(hub_id, config, split=split)``, any failure as one :class:`DataError`."""
    from datasets import load_dataset

    try:
        return load_dataset(hub_id, config, split=split)
    except Exception as e:  # the Hub raises many types; all mean "cannot get this data"
        raise DataError(f"task {task}: cannot load split '{split}' of {hub_id} from the Hugging Face Hub "
                        f"({type(e).__name__}: {e}); offline, {offline_fix}") from None


def split_name(spec: str) -> str:
    """The split name of a slicing spec: ``validation[:80%]`` -> ``validation``."""
    return spec.split("[", 1)[0].strip()


def slice_indices(num_rows: int, spec: str) -> list[int] | None:
    """The rows of a ``num_rows``-row split that the slice in ``spec`` selects (None: no slice)."""
    if "[" not in spec:
        return None
    name = split_name(spec)
    try:
        instructions = ReadInstruction.from_spec(spec).to_absolute({name: num_rows})
    except (ValueError, AssertionError) as e:
        raise DataError(f"split '{spec}': not a valid split slice ({e}); write e.g. "
                        "'validation[:80%]' or 'train[:1000]'") from None
    indices: list[int] = []
    for ins in instructions:
        indices.extend(range(ins.from_, ins.to))
    return indices


def slice_split(dataset: Dataset, spec: str) -> Dataset:
    """Apply the slice in ``spec`` (Hugging Face syntax) to the full split ``dataset``."""
    indices = slice_indices(len(dataset), spec)
    return dataset if indices is None else dataset.select(indices)


@torch.no_grad()
def predict(model: PreTrainedModel, features: Dataset, collate, batch_size: int,
            autocast) -> list[Any]:
    """Run ``model`` over ``features`` in eval mode; returns the per-batch outputs, in order.

    Under several processes each one predicts a contiguous slice of the batches (the same batches
    as on one process) and every process gets all outputs back, on CPU in fp32: each example is
    counted once and every process computes the same metrics.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    cols = [c for c in features.column_names if c in ("input_ids", "attention_mask", "token_type_ids")]
    sharded = distributed.active()
    if sharded:
        first, stop = distributed.shard_bounds(-(-len(features) // batch_size))
        rows = range(first * batch_size, min(stop * batch_size, len(features)))
        features = features.select(rows) if len(rows) else features.select([])
    # A generator of its own: a loader's iterator otherwise draws its seed from torch's global RNG,
    # and the training steps after a mid-run evaluation would see other dropout masks.
    loader = torch.utils.data.DataLoader(features.select_columns(cols), batch_size=batch_size,
                                         collate_fn=collate, generator=torch.Generator())
    outs = []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            out = model(**batch)
        outs.append(_to_cpu_fp32(out) if sharded else out)
    model.train(was_training)
    return distributed.gather_in_order(outs) if sharded else outs


def _to_cpu_fp32(output: Any) -> Any:
    """A model output with its floating-point tensors on CPU in fp32 (to be sent between processes)."""
    fields = {k: v.detach().float().cpu() if torch.is_tensor(v) and v.is_floating_point() else v
              for k, v in output.items()}
    return type(output)(**fields)


def cache_root() -> Path:
    """Where tokenised datasets are cached (``$MOVPRUNE_CACHE`` or ``~/.cache/movprune``)."""
    return Path(os.environ.get("MOVPRUNE_CACHE", Path.home() / ".cache" / "movprune"))


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of everything about the tokenizer that changes its output."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        # Calling the tokenizer stores its truncation/padding settings in this state; they are
        # arguments of each call (part of the cache key elsewhere), not properties of the tokenizer.
        state.pop("truncation", None)
        state.pop("padding", None)
        text = json.dumps(state, sort_keys=True)
    else:
        text = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(key_parts: dict[str, Any], build) -> Dataset:
    """Load the dataset cached under a hash of ``key_parts``, or ``build()`` and cache it."""
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_root() / "tokenized" / key
    if (path / "dataset_info.json").exists():
        try:
            return load_from_disk(str(path))
        except Exception:  # a corrupt cache entry is rebuilt, never trusted
            pass
    dataset = build()
    try:
        # The cache is movprune's own folder: a corrupt entry (it exists, but did not load) is replaced.
        with staged_dir(path, replace=path.exists()) as tmp:
            dataset.save_to_disk(str(tmp))
    except ResultExistsError:
        pass  # another process published the same entry meanwhile: use theirs
    return load_from_disk(str(path))
