"""images/build.py rebuilds exactly what changed: an image's content hash moves with its Containerfile, the
files it copies and its parent, and with nothing else (no podman needed: the hashes are computed from files)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """build.py working on a copy of the repository's inputs, with stand-in Go binaries."""
    spec = importlib.util.spec_from_file_location("harness_images_build", REPO / "images/build.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    copy = tmp_path / "repo"
    for d in ("images", "workers"):
        shutil.copytree(REPO / d, copy / d, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "roles/local_cluster/defaults").mkdir(parents=True)
    shutil.copy(REPO / "roles/local_cluster/defaults/main.yml", copy / "roles/local_cluster/defaults/main.yml")
    monkeypatch.setattr(mod, "REPO", copy)
    bin_dir = tmp_path / "bin"
    for d, f in (("prometheus-adapter-v0.12.0", "adapter"), ("kube-state-metrics-v2.15.0", "kube-state-metrics"),
                 ("coredns-v1.14.7", "coredns"), ("metrics-server-v0.8.0", "metrics-server"),
                 ("kube-router-v2.1.0", "kube-router"), ("prometheus-operator-v0.85.0", "operator"),
                 ("prometheus-operator-v0.85.0", "prometheus-config-reloader"), ("prometheus-v3.5.0", "prometheus")):
        (bin_dir / d).mkdir(parents=True, exist_ok=True)
        (bin_dir / d / f).write_bytes(b"binary " + f.encode())
    mod.bin_dir = bin_dir
    mod.copy = copy
    return mod


def hashes(build, args: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    base, images = build.load_spec(build.copy / "images/images.yml")
    out = {"base": build.base_hash(base, "debootstrap")}
    for img in images:
        out[img.name] = build.hash_image(img, out[img.parent], (args or {}).get(img.name, {}), build.bin_dir)
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {n for n in before if before[n] != after[n]}


def test_hashes_are_stable(build) -> None:
    assert hashes(build) == hashes(build)


def test_a_worker_source_change_rebuilds_the_python_workloads_only(build) -> None:
    before = hashes(build)
    (build.copy / "workers/core/common.py").write_text((build.copy / "workers/core/common.py").read_text() + "\n# x\n")
    assert changed(before, hashes(build)) == {"gateway", "stt-worker", "tts-worker", "tts-coqui-worker",
                                              "mt-worker", "lipsync-worker", "queue-exporter", "gpu-exporter",
                                              "cost-exporter"}


def test_a_shared_requirement_change_rebuilds_every_python_image(build) -> None:
    before = hashes(build)
    p = build.copy / "images/requirements/base.txt"
    p.write_text(p.read_text() + "# comment\n")
    assert changed(before, hashes(build)) == {"python-base", "python-ml", "python-torch", "gateway", "stt-worker",
                                              "tts-worker", "tts-coqui-worker", "mt-worker", "lipsync-worker",
                                              "queue-exporter", "gpu-exporter", "cost-exporter"}


def test_the_torch_layer_is_shared_by_the_torch_images_only(build) -> None:
    """torch (several GB) is one layer, python-torch, under both torch images: changing its pin rebuilds that layer and
    the two images on it, and nothing else (no other image carries torch)."""
    before = hashes(build)
    p = build.copy / "images/requirements/torch.txt"
    p.write_text(p.read_text() + "# comment\n")
    assert changed(before, hashes(build)) == {"python-torch", "tts-coqui-worker", "lipsync-worker"}
    spec = {i.name: i for i in build.load_spec(build.copy / "images/images.yml")[1]}
    assert spec["python-torch"].push is False and spec["python-torch"].optional is True


def test_a_containerfile_or_binary_change_rebuilds_that_image_only(build) -> None:
    before = hashes(build)
    p = build.copy / "images/redis/Containerfile"
    p.write_text(p.read_text() + "\n# x\n")
    (build.bin_dir / "kube-state-metrics-v2.15.0/kube-state-metrics").write_bytes(b"another build")
    assert changed(before, hashes(build)) == {"redis", "kube-state-metrics"}


def test_the_gpu_variant_is_another_stt_image(build) -> None:
    before = hashes(build)
    assert changed(before, hashes(build, {"stt-worker": {"VARIANT": "gpu"}})) == {"stt-worker"}


def test_a_missing_go_binary_is_named(build) -> None:
    shutil.rmtree(build.bin_dir / "prometheus-adapter-v0.12.0")
    with pytest.raises(build.BuildError, match=r"prometheus-adapter: needs .*prometheus-adapter-v0\.12\.0/adapter"):
        hashes(build)
