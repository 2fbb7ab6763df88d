"""Helpers for the worker tests: free ports, real child processes, waiting on HTTP endpoints."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STT_", "TTS_", "QUEUE_", "GATEWAY_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - fixed 127.0.0.1 URLs
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if predicate():
                return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Proc:
    """A child process with its stderr captured to a file, stopped (SIGKILL) at teardown if still alive."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen([sys.executable, *args], env=env, cwd=REPO,
                                      stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self._log.close()


def start_worker(
    tmp: Path, name: str, service: str, env: dict[str, str], ready_timeout: float = 90
) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc(["-m", "workers.worker", "--service", service],
                base_env(METRICS_PORT=str(port), **env), tmp / f"{name}.log")
    try:
        wait_for(lambda: proc.popen.poll() is None and http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200,
                 ready_timeout, f"{name} ready")
    except AssertionError:
        proc.stop()
        raise AssertionError(f"{name} did not become ready; log:\n{proc.log()[-3000:]}") from None
    return proc, port
