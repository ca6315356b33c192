"""Interrupts honoured between steps: Ctrl-C (SIGINT) and SIGTERM only set a flag while training runs.

A KeyboardInterrupt raised in the middle of a step (inside backward, between optimizer.step and the
scheduler, ...) would leave a state that no uninterrupted run ever had; saving it made `--resume` replay
differently. With the flag, the loop finishes the step it is in, saves, and stops, so Ctrl-C then
`--resume` equals an uninterrupted run. A second Ctrl-C restores the default behaviour and stops at once
(without saving). Under torchrun the ranks agree on the flag every step (one tiny all-reduce), so they
stop at the same step.
"""

from __future__ import annotations

import signal
import threading

from pipeline.distributed import DistContext

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """Context manager: while inside, SIGINT/SIGTERM set `requested()` instead of raising."""

    def __init__(self, context: DistContext | None = None):
        self.context = context or DistContext()
        self.flag = False
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            self.previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def _handle(self, signum, frame) -> None:
        if self.flag and signum == signal.SIGINT:  # the second Ctrl-C: the user wants out now
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.flag = True

    def requested(self) -> bool:
        """Whether any rank was asked to stop (a collective call under torchrun: call it on every rank)."""
        return self.context.all_reduce_sum(1.0 if self.flag else 0.0) > 0
