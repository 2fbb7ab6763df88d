"""Fraction of a sliding window a worker spent processing (model_worker_busy_ratio).

The GPU simulator reads this ratio as the GPU utilisation of the worker's pod, so it must describe the
recent past (a sliding window), not a lifetime average.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class BusyTracker:
    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_s
        self._clock = clock
        self._started = clock()
        self._intervals: deque[tuple[float, float]] = deque()  # closed busy intervals, oldest first
        self._busy_since: float | None = None
        self._depth = 0  # nested begin() calls: busy while any unit of work is running
        self._lock = threading.Lock()

    def begin(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._busy_since = self._clock()
            self._depth += 1

    def end(self) -> None:
        with self._lock:
            if self._depth == 0:
                raise RuntimeError("BusyTracker.end() without begin()")
            self._depth -= 1
            if self._depth == 0 and self._busy_since is not None:
                self._intervals.append((self._busy_since, self._clock()))
                self._busy_since = None

    def ratio(self) -> float:
        """Busy time within the last window / the window (shorter while the process is younger)."""
        with self._lock:
            now = self._clock()
            start = now - self._window
            while self._intervals and self._intervals[0][1] <= start:
                self._intervals.popleft()
            busy = sum(min(end, now) - max(begin, start) for begin, end in self._intervals)
            if self._busy_since is not None:
                busy += now - max(self._busy_since, start)
            span = min(self._window, now - self._started)
            return 0.0 if span <= 0 else max(0.0, min(1.0, busy / span))
