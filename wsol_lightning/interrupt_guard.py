"""SIGINT and SIGTERM as ``KeyboardInterrupt``, with the signal remembered: how fit.py and evaluate.py stop.

Its own module, importing nothing heavy: ``evaluate.py`` uses it and must start without torch or Lightning.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any, Dict, Optional


class InterruptGuard:
    """Turns SIGINT and SIGTERM into ``KeyboardInterrupt`` and remembers which came.

    Lightning catches ``KeyboardInterrupt`` inside ``fit``/``test``: it calls the
    callbacks' ``on_exception``, tears down (and stops DDP workers), then exits with
    status 1; the guard tells that exit from others. SIGTERM is stopped the same
    way, at once, rather than after the current batch as Lightning's own SIGTERM
    flag would: the resume point is the last completed epoch either way, and one
    path for both signals is one path to test. A second signal is ignored while
    the first shuts the run down.

    Attributes:
        signal: the first signal received (None if none).
    """

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.signal is not None:
            return
        self.signal = signum
        raise KeyboardInterrupt

    def __enter__(self) -> "InterruptGuard":
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def exit_status(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + int(self.signal or 0)

    @property
    def signal_name(self) -> str:
        """``SIGINT`` or ``SIGTERM``; ``interrupt`` when no signal came (a ``KeyboardInterrupt`` raised otherwise)."""
        return signal.Signals(self.signal).name if self.signal else "interrupt"
