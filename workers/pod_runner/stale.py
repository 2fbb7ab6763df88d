"""Workers left behind by an earlier run of the runner: found, then stopped, never adopted.

Two sources name them: the process file this runner keeps (pid, start time, argv of every worker it
runs), which also covers pods deleted while no runner was up; and the ``harness.local/host-pid``
annotation on pods that still exist. A pid only counts when the live process has the same owner and
the same command line (and, from the process file, the same start time), so a reused pid is left alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from workers.pod_runner.file_sd import write_atomic

log = logging.getLogger("workers.pod_runner.stale")

PID_ANNOTATION = "harness.local/host-pid"
METRICS_URL_ANNOTATION = "harness.local/metrics-url"


@dataclass(frozen=True)
class Recorded:
    pid: int
    create_time: float | None
    argv: tuple[str, ...]
    namespace: str
    pod: str
    grace_s: int


def save(path: Path, records: list[Recorded]) -> None:
    write_atomic(path, json.dumps([asdict(r) for r in records], indent=2) + "\n")


def load(path: Path) -> list[Recorded]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("process file unreadable; ignoring it", extra={"path": str(path), "error": repr(exc)})
        return []
    records = []
    for item in raw if isinstance(raw, list) else []:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            records.append(Recorded(pid=int(item["pid"]), create_time=item.get("create_time"),
                                    argv=tuple(item["argv"]), namespace=str(item["namespace"]),
                                    pod=str(item["pod"]), grace_s=int(item["grace_s"])))
    return records


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def matching_process(record: Recorded) -> psutil.Process | None:
    """The live process the record describes, or None (gone, someone else's, or a reused pid)."""
    try:
        proc = psutil.Process(record.pid)
        if proc.uids().real != os.getuid() or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if tuple(proc.cmdline()) != record.argv:
            return None
        if record.create_time is not None and abs(proc.create_time() - record.create_time) > 0.05:
            return None
    except psutil.Error:
        return None
    return proc


def terminate(records: list[Recorded]) -> int:
    """SIGTERM every live match, wait up to the longest grace period, SIGKILL what is left."""
    found: dict[int, tuple[psutil.Process, Recorded]] = {}
    for record in records:
        proc = matching_process(record)
        if proc is not None and proc.pid != os.getpid():
            found[proc.pid] = (proc, record)
    if not found:
        return 0
    for proc, record in found.values():
        log.warning("terminating a stale worker from an earlier run",
                    extra={"event": "stale", "namespace": record.namespace, "pod": record.pod,
                           "pid": proc.pid, "grace_s": record.grace_s})
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    grace = max(record.grace_s for _, record in found.values())
    alive = _wait_gone([proc for proc, _ in found.values()], grace)
    for proc in alive:
        log.warning("stale worker killed after its grace period", extra={"event": "stale", "pid": proc.pid})
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(proc.pid) == proc.pid:  # workers lead their own group: take its children too
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _wait_gone(alive, 5)
    return len(found)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until each process has exited; a zombie counts as gone (its parent, not us, must reap it)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if _running(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
