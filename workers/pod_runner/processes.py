"""The process table: one host process per pod, with ports, restarts with backoff, and graceful stops.

A worker runs in its own session, so a Ctrl-C at the runner's terminal does not reach it and a final
SIGKILL can take its whole process group, as the kubelet's kill takes the whole container. SIGTERM goes
to the worker's main process only, as it would go to a container's PID 1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

from workers.pod_runner.config import PortRange
from workers.pod_runner.kube import PodKey
from workers.pod_runner.podspec import Launch

log = logging.getLogger("workers.pod_runner.processes")

RUNNING, BACKOFF, STOPPING, DONE = "running", "backoff", "stopping", "done"
# A worker that stayed up this many backoff ceilings starts over at the shortest backoff.
_BACKOFF_RESET_FACTOR = 2


class PortPool:
    """Hands out ports from PORT_RANGE that nothing on 127.0.0.1 is listening on."""

    def __init__(self, ports: PortRange, host: str = "127.0.0.1") -> None:
        self._ports, self._host = ports, host
        self._taken: set[int] = set()
        self._next = ports.first

    def allocate(self) -> int:
        size = self._ports.last - self._ports.first + 1
        for i in range(size):
            port = self._ports.first + (self._next - self._ports.first + i) % size
            if port not in self._taken and self.is_free(port):
                self._taken.add(port)
                self._next = port + 1 if port < self._ports.last else self._ports.first
                return port
        raise RuntimeError(f"no free port left in {self._ports.first}-{self._ports.last}")

    def release(self, port: int) -> None:
        self._taken.discard(port)

    def is_free(self, port: int) -> bool:
        """Nothing listens there. SO_REUSEADDR as HTTP servers set it: TIME_WAIT left by scrapes of an
        earlier worker on the port does not stop the next one from binding, so it must not count."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self._host, port))
            except OSError:
                return False
        return True


@dataclass
class Worker:
    key: PodKey
    uid: str
    node: str
    port: int
    launch: Launch
    log_path: Path
    state: str = RUNNING
    proc: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0
    next_start: float = 0.0
    kill_at: float = 0.0
    stop_reason: str = ""
    annotated_pid: int | None = None
    annotate_retry_at: float = 0.0
    last_cpu_s: float = field(default=0.0, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def fields(self, **extra: object) -> dict[str, object]:
        """The log fields that name this worker."""
        return {"namespace": self.key[0], "pod": self.key[1], "node": self.node, "pid": self.pid,
                "port": self.port, "restarts": self.restarts, **extra}


class ProcessTable:
    def __init__(self, workdir: Path, log_dir: Path, ports: PortPool, backoff_s: float,
                 backoff_max_s: float, metrics: RunnerCounters) -> None:
        self.workdir, self.log_dir, self.ports = workdir, log_dir, ports
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.metrics = metrics
        self.workers: dict[PodKey, Worker] = {}
        # The metrics thread reads the table while the reconcile loop changes it.
        self.lock = threading.RLock()
        self.retired_cpu_s: dict[str, float] = {}  # per node: CPU of processes that have ended

    # -- starting -----------------------------------------------------------------------------------
    def start(self, key: PodKey, uid: str, node: str, port: int, launch: Launch) -> Worker:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        worker = Worker(key=key, uid=uid, node=node, port=port, launch=launch,
                        log_path=self.log_dir / f"{key[0]}_{key[1]}.log")
        with self.lock:
            self.workers[key] = worker
        self._spawn(worker)
        self.metrics.started()
        return worker

    def restart(self, worker: Worker, launch: Launch, port: int) -> None:
        worker.launch, worker.port = launch, port
        worker.restarts += 1
        self._spawn(worker)
        self.metrics.restarted()

    def _spawn(self, worker: Worker) -> None:
        worker.state, worker.started_at, worker.annotated_pid = RUNNING, time.monotonic(), None
        # 0600: a worker may print what its environment holds (secrets among it).
        fd = os.open(worker.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as out:
            out.write(f"--- pod-runner: starting {worker.key[0]}/{worker.key[1]} "
                      f"(restart {worker.restarts}) at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
            out.flush()
            try:
                # No shell: argv comes from the pod spec and is executed as given.
                worker.proc = subprocess.Popen(  # noqa: S603 - argv from the pod spec, no shell
                    list(worker.launch.argv), cwd=self.workdir, env=worker.launch.env,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True)
            except OSError as exc:
                worker.proc, worker.ps = None, None
                out.write(f"--- pod-runner: cannot start {worker.launch.argv[0]}: {exc}\n".encode())
                self._schedule_restart(worker, f"spawn failed: {exc.strerror}")
                return
        try:
            worker.ps = psutil.Process(worker.proc.pid)
        except psutil.NoSuchProcess:
            worker.ps = None
        event, msg = ("restart", "worker restarted") if worker.restarts else ("start", "worker started")
        # Names only: the values may hold secrets.
        log.info(msg, extra=worker.fields(event=event, service=worker.launch.service,
                                          argv0=worker.launch.argv[0], env_names=sorted(worker.launch.env)))

    # -- supervision --------------------------------------------------------------------------------
    def poll(self) -> None:
        """Reap exited processes, schedule restarts, and SIGKILL stops whose grace has run out."""
        with self.lock:
            self._poll()

    def _poll(self) -> None:
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.proc is None or worker.state not in (RUNNING, STOPPING):
                continue  # BACKOFF and DONE hold an already reaped process
            self._last_reading(worker)
            code = worker.proc.poll()
            if code is None:
                if worker.state == STOPPING and now >= worker.kill_at:
                    log.warning("worker killed after its grace period",
                                extra=worker.fields(event="kill", reason=worker.stop_reason))
                    _kill_group(worker.proc.pid)
                    worker.kill_at = now + 5.0  # again later only if SIGKILL did not take
                continue
            self._retire(worker)
            if worker.state == STOPPING:
                log.info("worker stopped", extra=worker.fields(event="stop", reason=worker.stop_reason,
                                                               exit_code=code))
                self.metrics.stopped(worker.stop_reason)
                self._remove(worker)
                continue
            restart = worker.launch.restart_policy == "Always" or (
                worker.launch.restart_policy == "OnFailure" and code != 0)
            if restart:
                self._schedule_restart(worker, f"exited with code {code}")
            else:
                worker.state = DONE
                log.info("worker exited", extra=worker.fields(event="exit", exit_code=code,
                                                              restart_policy=worker.launch.restart_policy))
                self.metrics.stopped("exited")

    def _remove(self, worker: Worker) -> None:
        del self.workers[worker.key]
        self.ports.release(worker.port)

    def _schedule_restart(self, worker: Worker, why: str) -> None:
        ran_s = time.monotonic() - worker.started_at
        if ran_s >= _BACKOFF_RESET_FACTOR * self.backoff_max_s:
            worker.failures = 0
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** worker.failures)
        worker.failures += 1
        worker.state, worker.next_start = BACKOFF, time.monotonic() + delay
        log.warning("worker exited; restarting after backoff",
                    extra=worker.fields(event="exit", reason=why, backoff_s=round(delay, 2)))

    def due_restarts(self) -> list[Worker]:
        now = time.monotonic()
        return [w for w in self.workers.values() if w.state == BACKOFF and now >= w.next_start]

    # -- stopping -----------------------------------------------------------------------------------
    def stop(self, key: PodKey, reason: str, grace_s: int | None = None) -> None:
        """SIGTERM now, SIGKILL when the grace period has passed; a worker not running is dropped."""
        with self.lock:
            self._stop(key, reason, grace_s)

    def _stop(self, key: PodKey, reason: str, grace_s: int | None) -> None:
        worker = self.workers[key]
        if worker.state == STOPPING:
            return
        if worker.state != RUNNING or worker.proc is None:
            log.info("worker dropped", extra=worker.fields(event="stop", reason=reason, state=worker.state))
            self.metrics.stopped(reason)
            self._remove(worker)
            return
        grace = worker.launch.grace_s if grace_s is None else grace_s
        worker.state, worker.stop_reason = STOPPING, reason
        worker.kill_at = time.monotonic() + grace
        log.info("worker stopping", extra=worker.fields(event="sigterm", reason=reason, grace_s=grace))
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.proc.pid, signal.SIGTERM)

    def stop_all(self, reason: str) -> None:
        for key in list(self.workers):
            self.stop(key, reason)

    def kill_all(self) -> None:
        for worker in self.workers.values():
            if worker.proc is not None and worker.proc.poll() is None:
                log.warning("worker killed", extra=worker.fields(event="kill", reason="second signal"))
                _kill_group(worker.proc.pid)

    # -- reading ------------------------------------------------------------------------------------
    def live(self) -> list[Worker]:
        with self.lock:
            return [w for w in self.workers.values() if w.state in (RUNNING, STOPPING) and w.proc is not None]

    def count(self) -> int:
        return len(self.live())

    def _last_reading(self, worker: Worker) -> None:
        """Before reaping, read the zombie's CPU time so the node total never goes backwards."""
        if worker.ps is None:
            return
        with contextlib.suppress(psutil.Error):
            if worker.ps.status() == psutil.STATUS_ZOMBIE:
                worker.last_cpu_s = max(worker.last_cpu_s, cpu_seconds(worker.ps))

    def _retire(self, worker: Worker) -> None:
        self.retired_cpu_s[worker.node] = self.retired_cpu_s.get(worker.node, 0.0) + worker.last_cpu_s
        worker.last_cpu_s, worker.ps = 0.0, None


class RunnerCounters(Protocol):
    """What the process table reports to the metrics module."""

    def started(self) -> None: ...

    def restarted(self) -> None: ...

    def stopped(self, reason: str) -> None: ...


def cpu_seconds(process: psutil.Process) -> float:
    """utime + stime of a process and of its reaped children, read by psutil from /proc/<pid>/stat."""
    t = process.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
