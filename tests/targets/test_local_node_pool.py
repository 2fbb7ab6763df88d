"""The local inventory's real node is a machine of a pool with a GPU slot for every worker the HPAs may ask for,
so the surge proof can run each HPA's maximum as containers on it (before: one 1-GPU machine, 4 slots, held by the
minimums; the HPAs' new pods stayed Pending). Figures from the inventory and the service table, read with Ansible."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loadtests.inventory import ansible_value

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "inventories/local"


def enabled_maxima() -> int:
    table = yaml.safe_load((REPO / "roles/harness/defaults/main.yml").read_text())["harness_services"]
    return sum(s["hpa"]["max"] * s["gpu"] for s in table if s["enabled"])


@pytest.fixture(scope="module")
def with_node():
    return ansible_value('{"pools": harness_gpu_node_pools, "pool": real_node_gpu_pool}', LOCAL,
                         "-e", "local_real_node_enabled=true")


def test_the_node_pool_has_a_slot_for_every_worker_the_hpas_may_ask_for(with_node):
    pool = next(p for p in with_node["pools"] if p["name"] == with_node["pool"])
    slots = int(pool["gpus_per_node"]) * int(pool["time_slicing_replicas"])
    assert slots >= enabled_maxima(), (pool, enabled_maxima())


def test_the_node_pool_is_priced_as_the_machine_it_describes(with_node):
    pool = next(p for p in with_node["pools"] if p["name"] == with_node["pool"])
    prices = yaml.safe_load((REPO / "workers/cost/default_prices.yml").read_text())["instance_types"]
    assert pool["instance_type"] in prices, pool["instance_type"]
    assert prices[pool["instance_type"]]["gpus"] == int(pool["gpus_per_node"]), prices[pool["instance_type"]]
    assert prices[pool["instance_type"]]["gpu_type"] == pool["gpu_product"]


def test_without_the_node_the_pools_stay_the_kwok_ones():
    got = ansible_value('{"pools": harness_gpu_node_pools | map(attribute="name") | list, '
                        '"pool": real_node_gpu_pool}', LOCAL, "-e", "local_real_node_enabled=false")
    assert got == {"pools": ["gpu-l4"], "pool": "gpu-l4"}, got


def test_the_local_inventory_runs_the_stack_on_its_real_node_by_default():
    """One deployment path: `site.yml -i inventories/local` with nothing set applies the cluster manifests on the real
    node, and every program beside the playbooks reaches the stack through the API server (issue 12), not loopback."""
    got = ansible_value('{"switch": local_real_node_enabled | bool, "in_cluster": harness_services_in_cluster | bool,'
                        ' "endpoints": harness_endpoints}', LOCAL)
    assert got["switch"] is True and got["in_cluster"] is True, got
    flat = [got["endpoints"][k] for k in ("gateway", "prometheus", "alertmanager")]
    flat += list(got["endpoints"]["exporters"].values())
    assert all(ref.startswith("service:") for ref in flat), got["endpoints"]
    assert got["endpoints"]["api_key"].startswith("secret:"), got["endpoints"]
    assert got["endpoints"]["cost_config"].startswith("configmap:"), got["endpoints"]
