"""The time-slicing check (roles/time_slicing/tasks/verify.yml) on the local target: it passes on the simulated GPU
nodes local_cluster made, and fails naming the node, the expected and the actual capacity when capacity is altered."""

import uuid

import pytest
from conftest import ansible_playbook, clean_env

PLAYBOOK = "tests/targets/verify_time_slicing.yml"


def test_check_passes_on_the_local_target(kubeconfig, tmp_path):
    # Other sessions may be scaling services on the shared local cluster: give the probe more attempts.
    r = ansible_playbook("-i", "inventories/local", PLAYBOOK, "-e", f"harness_kubeconfig={kubeconfig}",
                         "-e", "time_slicing_probe_attempts=6", env=clean_env(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "Placement probe:" in out and "Pending with Insufficient nvidia.com/gpu" in out, out[-4000:]
    # The probe is created and deleted within the run: no change reported.
    assert "changed=0" in out, out[-2000:]


@pytest.fixture
def broken_node(kubeconfig):
    """A GPU-labelled node whose nvidia.com/gpu capacity (3) is not count x replicas (1 x 4), selected by a label only
    it carries so the rest of the cluster is not involved. No kwok annotation: no controller adopts it."""
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    tag = uuid.uuid4().hex[:8]
    name = f"ts-broken-{tag}"
    api.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {
        "gpu-serving-harness/test-broken": tag, "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.count": "1", "nvidia.com/gpu.replicas": "4"}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]}})
    try:
        api.patch_node_status(name, {"status": {"capacity": {"nvidia.com/gpu": "3", "cpu": "8", "memory": "32Gi",
                                                             "pods": "110"},
                                                "allocatable": {"nvidia.com/gpu": "3", "cpu": "8", "memory": "32Gi",
                                                                "pods": "110"}}})
        yield name, f"gpu-serving-harness/test-broken={tag}"
    finally:
        api.delete_node(name)


def test_check_fails_clearly_when_capacity_is_altered(broken_node, kubeconfig, tmp_path):
    name, selector = broken_node
    r = ansible_playbook("-i", "inventories/local", PLAYBOOK, "-e", f"time_slicing_verify_node_selector={selector}",
                         "-e", f"harness_kubeconfig={kubeconfig}", "-e", "time_slicing_verify_capacity_timeout=6",
                         "-e", "time_slicing_verify_capacity_delay=2", env=clean_env(tmp_path))
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode != 0, out[-3000:]
    assert (f"Node {name}: nvidia.com/gpu capacity is 3, expected 4 "
            "(nvidia.com/gpu.count=1 x nvidia.com/gpu.replicas=4) "
            "after waiting 6 s (time_slicing_verify_capacity_timeout)"
            in out), out[-3000:]
    assert "Traceback" not in out


def test_check_waits_for_the_capacity_then_names_the_timeout(kubeconfig, tmp_path):
    # Read-only: a selector no node carries stands for nodes whose device plugin has not published anything yet.
    import time

    started = time.monotonic()
    r = ansible_playbook("-i", "inventories/local", PLAYBOOK, "-e", f"harness_kubeconfig={kubeconfig}",
                         "-e", "time_slicing_verify_node_selector=gpu-serving-harness/no-such-node=none",
                         "-e", "time_slicing_verify_capacity_timeout=6", "-e", "time_slicing_verify_capacity_delay=2",
                         "-e", "time_slicing_verify_probe=false", env=clean_env(tmp_path))
    took = time.monotonic() - started
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode != 0, out[-3000:]
    assert ("No nodes match gpu-serving-harness/no-such-node=none "
            "after waiting 6 s (time_slicing_verify_capacity_timeout)" in out), out[-3000:]
    assert took >= 6, took  # it re-read the nodes for the whole window before failing
    assert "Traceback" not in out


def test_capacity_check_passes_on_the_local_nodes_without_a_probe(kubeconfig, tmp_path):
    # Read-only (no probe): the published capacity of the local GPU nodes satisfies the wait at once.
    r = ansible_playbook("-i", "inventories/local", PLAYBOOK, "-e", f"harness_kubeconfig={kubeconfig}",
                         "-e", "time_slicing_verify_probe=false", env=clean_env(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "changed=0" in out, out[-2000:]
