"""Fixtures for the image tests: the images built from the current sources, and the project's Redis image.

The images are built by playbooks/images.yml (the images stage of site.yml, which runs before pytest in
`make test`); the `images` fixture runs images/build.py --no-push against the same storage, so it finds them
and builds nothing unless the sources changed since.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from images_testlib import BRING_UP, CACHE, IMAGES_STATE, REPO, Container, free_port, podman_env, wait_for


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
