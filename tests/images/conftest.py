"""Fixtures for the image tests: the project's podman configuration, the images built from the current
sources, and containers started the way a pod runs them (image's own non-root user, read-only root
filesystem, /tmp as tmpfs, writable paths as volumes).

The images are built by playbooks/images.yml (the images stage of site.yml, which runs before pytest in
`make test`); the `images` fixture runs images/build.py --no-push against the same storage, so it finds them
and builds nothing unless the sources changed since.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """name -> local tag of every non-optional image, built from the current sources."""
    if not (IMAGES_STATE / "containers.conf").is_file():
        pytest.fail(f"{IMAGES_STATE}/containers.conf not found: the builder is not configured; run {BRING_UP}")
    work = tmp_path_factory.mktemp("image-build")
    r = subprocess.run(
        [sys.executable, str(REPO / "images/build.py"), "build", "--no-push",
         "--registry", "127.0.0.1:1/unused", "--lock", str(work / "lock.json"), "--log-dir", str(work),
         "--pip-cache", str(CACHE / "pip")],
        env=podman_env(), capture_output=True, text=True, timeout=3600,
    )
    assert r.returncode == 0, f"images/build.py failed:\n{r.stderr[-4000:]}"
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"images/build.py --no-push: built {summary['built'] or 'nothing'}", file=sys.stderr)
    return summary["images"]


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


@pytest.fixture
def start() -> Iterator[Callable[..., Container]]:
    started: list[Container] = []

    def _start(image: str, **kwargs) -> Container:
        c = Container(image, **kwargs)
        started.append(c)
        return c

    yield _start
    for c in started:
        c.stop()


def writable_dir(tmp_path: Path, name: str) -> Path:
    """A host directory the image's user (uid 10001) can write, mounted as a volume."""
    d = tmp_path / name
    d.mkdir()
    os.chown(d, 10001, 10001)
    return d


@pytest.fixture(scope="module")
def redis_container(images: dict[str, str]) -> Iterator[str]:
    """The project's Redis image on a free loopback port; yields its URL."""
    port = free_port()
    c = Container(images["redis"], args=["--port", str(port), "--bind", "127.0.0.1", "--save", ""])
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(up, 30, "the redis image answering PING", c.logs)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        c.stop()
