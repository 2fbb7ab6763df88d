"""Helpers for the image tests: the project's podman configuration and containers started the way a pod runs
them (the image's own non-root user, read-only root filesystem, /tmp as tmpfs, writable paths as volumes)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("HARNESS_STATE_DIR", Path.home() / ".local/state/gpu-serving-harness/local"))
IMAGES_STATE = STATE / "images"
CACHE = Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache/gpu-serving-harness"))
BRING_UP = "ansible-playbook -i inventories/local playbooks/images.yml"


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CONTAINERS_CONF=str(IMAGES_STATE / "containers.conf"),
        CONTAINERS_STORAGE_CONF=str(IMAGES_STATE / "storage.conf"),
        CONTAINERS_REGISTRIES_CONF=str(IMAGES_STATE / "registries.conf"),
        REGISTRY_AUTH_FILE=str(IMAGES_STATE / "auth.json"),
    )
    return env


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    r = subprocess.run(["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:4])} ... failed ({r.returncode}): {r.stderr[-3000:]}")
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 5) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310 - loopback URLs built here
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback URLs built here
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def wait_for(predicate: Callable[[], object], timeout: float, what: str, logs: Callable[[], str] = str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what} not within {timeout} s; container log:\n{logs()[-4000:]}")


class Container:
    """One container started like a pod's: no --user (the image's own), read-only root, tmpfs /tmp."""

    def __init__(self, image: str, env: dict[str, str] | None = None, args: list[str] | None = None,
                 volumes: list[str] | None = None) -> None:
        self.name = "harness-test-" + uuid.uuid4().hex[:10]
        argv = ["run", "--detach", "--name", self.name, "--read-only", "--tmpfs", "/tmp:rw,size=256m",
                "--network", "host", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        for k, v in (env or {}).items():
            argv += ["--env", f"{k}={v}"]
        for v in volumes or []:
            argv += ["--volume", v]
        podman(*argv, image, *(args or []))

    def logs(self) -> str:
        r = podman("logs", self.name, check=False)
        return r.stdout + r.stderr

    def running(self) -> bool:
        r = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return r.stdout.strip() == "true"

    def exec(self, *cmd: str) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *cmd, check=False)

    def stop(self) -> None:
        podman("rm", "--force", "--time", "5", self.name, check=False)


def writable_dir(tmp_path: Path, name: str) -> Path:
    """A host directory the image's user (uid 10001) can write, mounted as a volume."""
    d = tmp_path / name
    d.mkdir()
    os.chown(d, 10001, 10001)
    return d
