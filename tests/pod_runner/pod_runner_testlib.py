"""Helpers for the pod runner tests: waiting, reading the runner's outputs, and running it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll until ``check`` returns something truthy; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # a check may race the thing it watches; keep polling
            last = exc
        else:
            if last:
                return last  # type: ignore[return-value]
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of a /metrics endpoint as {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: dict, name: str, **labels: str) -> float | None:
    """The value of the one sample named ``name`` whose labels include ``labels``."""
    found = [v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items()]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else None


def pid_alive(pid: int) -> bool:
    """True while the pid exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


@dataclass
class RunnerProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int

    def log_lines(self) -> list[dict]:
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def events(self, event: str) -> list[dict]:
        return [line for line in self.log_lines() if line.get("event") == event]

    def stop(self, timeout: float) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def start_runner(kubeconfig: Path, namespace: str, state_dir: Path, **extra: str) -> RunnerProcess:
    metrics_port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("METRICS_PORT", "METRICS_HOST", "NAMESPACES")}
    env.update(KUBECONFIG=str(kubeconfig), NAMESPACES=namespace, WORKDIR=str(REPO), STATE_DIR=str(state_dir),
               FILE_SD_PATH=str(state_dir / "file_sd.json"), METRICS_PORT=str(metrics_port),
               RESYNC_SECONDS="2", RESTART_BACKOFF_SECONDS="0.5", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env.update(extra)
    log_path = state_dir / f"runner-{metrics_port}.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "workers.pod_runner"], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    runner = RunnerProcess(proc, log_path, metrics_port)
    wait_for(lambda: _ready(runner), 30, "the pod runner's /readyz")
    return runner


def _ready(runner: RunnerProcess) -> bool:
    if runner.proc.poll() is not None:
        raise AssertionError(f"pod runner exited with {runner.proc.returncode}:\n"
                             + runner.log_path.read_text(errors="replace")[-3000:])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{runner.metrics_port}/readyz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def read_file_sd(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []
