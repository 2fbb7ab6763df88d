"""images/sim-gpu-device-plugin: its Go tests (a fake kubelet serving the generated v1beta1 Registration service on a
unix socket; the plugin registered, listed, allocating, re-registering after kubelet restarts, removing its socket on
SIGTERM, refusing bad settings), go vet and gofmt. The modules come from the Go module cache the project's Go builds
share (HARNESS_CACHE/go); go.sum pins them, so once they are cached the run is offline."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from images_testlib import CACHE, REPO

pytestmark = pytest.mark.slow

PLUGIN = REPO / "images/sim-gpu-device-plugin"


@pytest.fixture(scope="module")
def go() -> str:
    path = shutil.which("go")
    if path is None:
        pytest.skip("go is not installed (scripts/bootstrap.sh installs it)")
    return path


def go_env() -> dict[str, str]:
    return dict(
        os.environ,
        GOTOOLCHAIN="local",
        CGO_ENABLED="0",
        GOFLAGS="-mod=readonly -buildvcs=false",
        GOMODCACHE=str(CACHE / "go/mod"),
        GOCACHE=str(CACHE / "go/build"),
    )


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=PLUGIN, env=go_env(), capture_output=True, text=True, timeout=600)


def test_go_test_passes(go: str) -> None:
    r = run([go, "test", "-count=1", "./..."])
    assert r.returncode == 0, f"go test ./... exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    assert "ok  \tharness.local/sim-gpu-device-plugin" in r.stdout, r.stdout


def test_go_vet_and_gofmt_are_clean(go: str) -> None:
    r = run([go, "vet", "./..."])
    assert r.returncode == 0, f"go vet ./... exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    gofmt = Path(run([go, "env", "GOROOT"]).stdout.strip()) / "bin/gofmt"
    r = run([str(gofmt), "-l", "."])
    assert r.returncode == 0 and r.stdout == "", f"gofmt -l: files not formatted:\n{r.stdout}\n{r.stderr}"
