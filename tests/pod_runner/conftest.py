"""Fixtures for the pod runner tests: the real local control plane and a namespace of our own.

These tests need the local target up. Without it they fail (not skip) and say how to bring it up.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

KUBECONFIG = Path(os.environ.get("KUBECONFIG")
                  or Path.home() / ".local/state/gpu-serving-harness/local/kubeconfig")
BRING_UP = ("bring the local target up first: `make run` "
            "(or `ansible-playbook -i inventories/local playbooks/site.yml`)")


@pytest.fixture(scope="session")
def kubeconfig() -> Path:
    if not KUBECONFIG.is_file():
        pytest.fail(f"no kubeconfig at {KUBECONFIG}: {BRING_UP}", pytrace=False)
    return KUBECONFIG


@pytest.fixture(scope="session")
def core_v1(kubeconfig: Path) -> client.CoreV1Api:
    api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    try:
        nodes = api.list_node(label_selector="harness.local/simulated=true", _request_timeout=10)
    except Exception as exc:
        pytest.fail(f"the local cluster at {kubeconfig} does not answer ({exc}): {BRING_UP}", pytrace=False)
    if not nodes.items:
        pytest.fail(f"no nodes labelled harness.local/simulated=true: {BRING_UP}", pytrace=False)
    return api


@pytest.fixture(scope="session")
def apps_v1(core_v1: client.CoreV1Api) -> client.AppsV1Api:
    return client.AppsV1Api(core_v1.api_client)


@pytest.fixture(scope="module")
def namespace(core_v1: client.CoreV1Api) -> Iterator[str]:
    name = f"pod-runner-test-{uuid.uuid4().hex[:8]}"
    core_v1.create_namespace({"metadata": {"name": name, "labels": {"harness.local/test": "pod-runner"}}})
    yield name
    core_v1.delete_namespace(name, propagation_policy="Background")
