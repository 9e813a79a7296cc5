"""Stopping a run cleanly: Ctrl-C ends it at a step boundary, with its state saved."""

import signal
import threading

import torch

from ..devices import Processes
from ..errors import TrainingError


class TrainingInterrupted(TrainingError):
    """Ctrl-C: the state was saved at a step boundary; ``--resume`` continues from that very step."""

    exit_status = 130  # the shell's status for a process stopped by SIGINT


class CtrlC:
    """Turns the first Ctrl-C (SIGINT) into a request to stop after the current step, so that the saved
    state is a whole step's; a second Ctrl-C stops at once. Only the main thread can catch signals."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def agreed(self, processes: Processes, device) -> bool:
        """Whether any process was asked to stop (all stop at the same step)."""
        if processes.world == 1:
            return self.requested
        return processes.sum(torch.tensor(float(self.requested), device=device)).item() > 0
