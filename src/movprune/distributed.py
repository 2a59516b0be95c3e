"""One run on several processes (``torchrun``, ``accelerate launch``): the rules that make it the same
experiment as on one process.

* ``train.batch_size`` is the GLOBAL batch: each optimizer step sees the same examples whatever the
  number of processes; each process gets ``batch_size / num_processes`` of them.
* Only the main process writes files; the others wait for it, and an error it meets is raised on
  every process (none waits forever).
* Evaluation is sharded (each process predicts a contiguous slice of the batches) and gathered
  back in order, so every example is counted once and every process computes the same metrics.
* Decisions taken from data a process sees alone (a controller's scale) are averaged across
  processes, and the final masks are compared across processes.

Everything here is a no-op on one process; nothing here imports from movprune.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def launched_world_size() -> int:
    """The number of processes a launcher (torchrun, accelerate launch, MPI) started, from its
    environment; 1 outside a launcher."""
    for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 1


def launched_as_main() -> bool:
    """Whether this process is rank 0 of its launch (or not launched at all): only it prints."""
    for var in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var]) == 0
    return True


def init_process_state() -> Any:
    """Initialise accelerate's process state once, before anything else asks for it.

    ``torchrun`` on a machine without an accelerator would otherwise give accelerate's
    single-process state to every rank (N independent copies of the run): a launched multi-process
    job without a GPU runs on CPU with gloo. With a GPU, accelerate picks nccl itself.
    """
    from accelerate import PartialState

    cpu = launched_world_size() > 1 and not _has_accelerator()
    return PartialState(cpu=cpu)


def _has_accelerator() -> bool:
    accelerator_api = getattr(torch, "accelerator", None)
    if accelerator_api is not None and hasattr(accelerator_api, "is_available"):
        return bool(accelerator_api.is_available())
    return torch.cuda.is_available()


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def world_size() -> int:
    """Processes in the running group (1 without one)."""
    return torch.distributed.get_world_size() if active() else 1


def rank() -> int:
    """This process's rank (0 without a group)."""
    return torch.distributed.get_rank() if active() else 0


def per_process_batch_size(global_batch_size: int, num_processes: int) -> int | None:
    """``global / num_processes``, or None when it does not divide evenly (the caller reports it)."""
    if global_batch_size % num_processes:
        return None
    return global_batch_size // num_processes


def main_first(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on the main process while the others wait; an exception it raises is raised on
    every process (the same type where it can be rebuilt from its message), so no process is left
    waiting for one that failed. Returns ``fn()``'s value on the main process, None elsewhere."""
    if not active():
        return fn()
    error: BaseException | None = None
    value = None
    if rank() == 0:
        try:
            value = fn()
        except BaseException as e:
            error = e
    box = [None if error is None else (type(error), str(error))]
    torch.distributed.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[0] is not None:
        kind, message = box[0]
        raise _rebuild(kind, message)
    return value


def _rebuild(kind: type, message: str) -> BaseException:
    """An exception of type ``kind`` reading ``message``, without calling its own ``__init__``
    (whose arguments may differ from the message)."""
    if not (isinstance(kind, type) and issubclass(kind, Exception)):
        return RuntimeError(f"the main process failed: {message}")
    error = kind.__new__(kind)
    Exception.__init__(error, message)
    return error


def shard_bounds(count: int) -> tuple[int, int]:
    """The contiguous ``[start, stop)`` slice of ``count`` items this process handles."""
    n, r = world_size(), rank()
    per, extra = divmod(count, n)
    start = r * per + min(r, extra)
    return start, start + per + (1 if r < extra else 0)


def gather_in_order(items: list[T]) -> list[T]:
    """Every process's ``items`` (picklable, on CPU), concatenated in rank order, on every process."""
    if not active():
        return items
    gathered: list[list[T] | None] = [None] * world_size()
    torch.distributed.all_gather_object(gathered, items)
    return [item for part in gathered for item in (part or [])]


def sum_across(values: Sequence[float]) -> list[float]:
    """Element-wise sums of ``values`` over all processes (the values themselves on one process)."""
    if not active():
        return list(values)
    gathered: list[list[float] | None] = [None] * world_size()
    torch.distributed.all_gather_object(gathered, [float(v) for v in values])
    return [sum(part[i] for part in gathered) for i in range(len(values))]


def mask_digest(weights: Sequence[torch.Tensor]) -> str:
    """A SHA-256 of which entries of ``weights`` are non-zero (the baked masks)."""
    h = hashlib.sha256()
    for w in weights:
        h.update(str(tuple(w.shape)).encode())
        h.update((w.detach() != 0).cpu().numpy().tobytes())
    return h.hexdigest()
