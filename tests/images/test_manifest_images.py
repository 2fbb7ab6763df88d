"""Every workload manifest of the cloud and self-managed targets takes its image from the inventory's
harness_image_registry: by tag before this project pushed, by digest once the lock file records a push."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = {"GCP_PROJECT": "demo-project", "AWS_ACCOUNT_ID": "123456789012", "AWS_REGION": "us-east-1",
       "HARNESS_IMAGE_REGISTRY": "registry.example.internal:5000/gpu-serving-harness"}
REGISTRY = {"gke": "us-central1-docker.pkg.dev/demo-project/gpu-serving-harness",
            "eks": "123456789012.dkr.ecr.us-east-1.amazonaws.com/gpu-serving-harness",
            "self_managed": "registry.example.internal:5000/gpu-serving-harness"}
DIGEST = "sha256:" + "ab" * 32


def render(target: str, tmp_path: Path, state_dir: Path) -> list[str]:
    env = {**os.environ, **ENV, "HARNESS_STATE_DIR": str(state_dir), "ANSIBLE_NOCOLOR": "1"}
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", f"inventories/{target}", "tests/images/render_images.yml",
                        "-e", f"render_out={tmp_path}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"rendering {target} failed:\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}"
    text = (tmp_path / "manifests.json").read_text()
    assert "ghcr.io/gpu-serving-harness" not in text
    objects = [o for o in json.loads(text) if o]
    return [c["image"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")
            for c in o["spec"]["template"]["spec"]["containers"]]


@pytest.mark.parametrize("target", ["gke", "eks", "self_managed"])
def test_manifests_take_images_from_the_inventory_registry(target: str, tmp_path: Path) -> None:
    images = render(target, tmp_path, tmp_path / "state")
    names = {i.rsplit("/", 1)[1].split(":")[0] for i in images}
    assert {"stt-worker", "tts-worker", "gateway", "queue-exporter", "redis"} <= names, images
    assert all(i.startswith(REGISTRY[target] + "/") and i.endswith(":0.1.0") for i in images), images


@pytest.mark.parametrize("target", ["gke", "self_managed"])
def test_pushed_images_are_referred_to_by_digest(target: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "images").mkdir(parents=True)
    ref = f"{REGISTRY[target]}/gateway@{DIGEST}"
    (state / "images/images.json").write_text(json.dumps(
        {"registry": REGISTRY[target], "images": {"gateway": {"digest": DIGEST, "ref": ref}}}))
    images = render(target, tmp_path, state)
    assert ref in images, images
    # Not pushed by this project: still by tag.
    assert f"{REGISTRY[target]}/stt-worker:0.1.0" in images, images


def test_a_lock_file_for_another_registry_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "images").mkdir(parents=True)
    (state / "images/images.json").write_text(json.dumps(
        {"registry": "127.0.0.1:16500/gpu-serving-harness",
         "images": {"gateway": {"digest": DIGEST, "ref": f"127.0.0.1:16500/gpu-serving-harness/gateway@{DIGEST}"}}}))
    images = render("gke", tmp_path, state)
    assert f"{REGISTRY['gke']}/gateway:0.1.0" in images, images


@pytest.mark.parametrize(("target", "env", "message"), [
    ("self_managed", {"HARNESS_IMAGE_REGISTRY": ""},
     "harness_image_registry=\"\" is not a registry/repository reference"),
    ("gke", {"GCP_PROJECT": ""}, "Set GCP_PROJECT (the Artifact Registry project)"),
    ("eks", {"AWS_ACCOUNT_ID": ""}, "Set AWS_ACCOUNT_ID and AWS_REGION"),
    ("self_managed", {"HARNESS_IMAGE_REGISTRY": "Registry.Example/Bad Name"}, "\"Registry.Example/Bad Name\""),
])
def test_images_playbook_stops_early_on_a_bad_registry(target: str, env: dict[str, str], message: str,
                                                        tmp_path: Path) -> None:
    run_env = {**os.environ, **ENV, **env, "HARNESS_STATE_DIR": str(tmp_path), "ANSIBLE_NOCOLOR": "1"}
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", f"inventories/{target}", "playbooks/images.yml",
                        "--tags", "images_preflight"], cwd=REPO, env=run_env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0, r.stdout[-2000:]
    assert message in r.stdout, r.stdout[-3000:]
