"""Fixtures for the cloud and self-managed target tests.

These tests never reach a cloud: they render what the roles would send (tests/targets/render.yml), check it,
and dry-run the Kubernetes objects against the local target's real kube-apiserver.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TARGETS = ["gke", "eks", "self_managed"]
LOCAL_KUBECONFIG = Path(
    os.environ.get("HARNESS_STATE_DIR", Path.home() / ".local/state/gpu-serving-harness/local")
) / "kubeconfig"
BRING_UP = "ansible-playbook -i inventories/local playbooks/cluster.yml"

# Variables a run must not inherit: the tests prove what happens without credentials.
CLOUD_ENV = (
    "GCP_PROJECT", "GOOGLE_CLOUD_PROJECT", "GCP_SERVICE_ACCOUNT_FILE", "GOOGLE_APPLICATION_CREDENTIALS",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "EKS_SUBNET_IDS",
)


def clean_env(home, **extra):
    """The caller's environment without cloud credentials, with HOME pointing at an empty directory."""
    env = {k: v for k, v in os.environ.items() if k not in CLOUD_ENV}
    env.update(HOME=str(home), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCAL_TEMP=str(home / "tmp"))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def ansible_playbook(*args, env=None, timeout=600):
    return subprocess.run(
        [str(BIN / "ansible-playbook"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def rendered(tmp_path_factory):
    """Per target: the controller rendering and the self-managed Node objects."""
    out = {}
    for target in TARGETS:
        d = tmp_path_factory.mktemp(f"render-{target}")
        r = ansible_playbook("-i", f"inventories/{target}", "tests/targets/render.yml", "-e", f"render_out={d}")
        assert r.returncode == 0, f"rendering {target} failed:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
        controller = json.loads((d / "controller.json").read_text())
        controller["nodes"] = [json.loads(p.read_text()) for p in sorted(d.glob("node-*.json"))]
        out[target] = controller
    return out


@pytest.fixture(scope="session")
def kubeconfig():
    """The local target's kubeconfig; the local control plane must be up (the test command brings it up)."""
    if not LOCAL_KUBECONFIG.is_file():
        pytest.fail(
            f"{LOCAL_KUBECONFIG} not found: these tests dry-run objects against the local target's kube-apiserver. "
            f"Bring it up first: {BRING_UP}"
        )
    return str(LOCAL_KUBECONFIG)


@pytest.fixture(scope="session")
def dynamic_client(kubeconfig, tmp_path_factory):
    from kubernetes import config, dynamic

    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        # Discovery of this session's apiserver, not the client's shared cache (<tmp>/osrcp-<host hash>.json, kept
        # across runs): the local target's cluster is recreated at the same address when the real node is switched
        # on or off, and a cache from the node's cluster listed monitoring.coreos.com, which the host-process
        # cluster does not serve (every ServiceMonitor answered 404 instead of "CRD not installed": CI, 2026-12-03).
        return dynamic.DynamicClient(api, cache_file=str(tmp_path_factory.mktemp("discovery") / "discovery.json"))
    except Exception as exc:  # connection refused, TLS, auth: say which cluster and how to start it
        pytest.fail(f"cannot reach the local kube-apiserver with {kubeconfig}: {exc}. Start it: {BRING_UP}")
