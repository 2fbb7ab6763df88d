"""Signal handling for the exporters' main loops, without Python signal handlers.

A process-directed signal goes to any thread that does not block it; a main thread sleeping in
``Event.wait()`` is not woken when the kernel hands SIGHUP or SIGTERM to the HTTP server thread, and
setting an Event from a handler can deadlock on the Event's own lock. So the main thread blocks the
signals before any thread exists (threads inherit the mask: none of them ever takes these signals)
and receives them synchronously with ``sigtimedwait``.
"""

from __future__ import annotations

import signal

HANDLED_SIGNALS = frozenset({signal.SIGHUP, signal.SIGTERM, signal.SIGINT})
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def block_handled_signals() -> None:
    """Call in the main thread before starting the HTTP server (or any other thread)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)


def wait_for_signal(timeout: float | None = None) -> int | None:
    """The next handled signal number, or None when ``timeout`` seconds pass without one."""
    if timeout is None:
        return signal.sigwait(HANDLED_SIGNALS)
    info = signal.sigtimedwait(HANDLED_SIGNALS, max(0.0, timeout))
    return info.si_signo if info else None
