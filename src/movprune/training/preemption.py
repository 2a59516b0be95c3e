"""Pre-emption: SIGTERM (what Slurm and Kubernetes send before killing a job) and Ctrl-C become a
request the training loop honours at the next step boundary, by saving a checkpoint and stopping
(under several processes, at the next logging or checkpoint step, where they all agree).

A second Ctrl-C stops at once (``KeyboardInterrupt``): the user insists, the run stays unfinished
and resumes from its last checkpoint.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import torch

#: Signals turned into a stop request.
HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Context manager installing the handlers (only in the main thread, where Python allows it)
    and restoring the previous ones on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue  # e.g. SIGINT in a shell's background job: stay deaf as asked
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum is not None:
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def requested(self, accelerator: Any = None, *, collective: bool = True) -> bool:
        """Whether the run stops at this step boundary (saving a checkpoint first).

        One process reads its own flag, which costs nothing. Several must agree, since saving a
        checkpoint is collective: their flags are combined by an all-reduce read back on the host, a
        synchronisation done only where ``collective`` is true, on steps every process knows it acts
        on anyway (logging and checkpoint steps); elsewhere the answer is no, and a signal waits for
        the next such step.
        """
        local = self.signum is not None
        if accelerator is None or accelerator.num_processes == 1:
            return local
        if not collective:
            return False
        flag = torch.tensor([self.signum or 0], device=accelerator.device)
        got = int(accelerator.reduce(flag, reduction="max").item())
        if got and self.signum is None:
            self.signum = got
        return bool(got)

    @property
    def exit_code(self) -> int:
        """The shell's code for the signal: 128 + its number (143 for SIGTERM, 130 for Ctrl-C)."""
        return 128 + int(self.signum or signal.SIGTERM)

    @property
    def name(self) -> str:
        """``SIGTERM`` or ``SIGINT`` (Ctrl-C)."""
        sig = signal.Signals(self.signum or signal.SIGTERM)
        return "Ctrl-C" if sig == signal.SIGINT else sig.name
