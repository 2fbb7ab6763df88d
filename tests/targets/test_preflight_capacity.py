"""The preflight role's capacity filters (roles/preflight/filter_plugins/harness_capacity.py), called directly.

Expectations come from Kubernetes' quantity format and scheduler rule (a pod's requests must all fit on one node),
not from the filters. The molecule scenario `preflight` runs the same rules through the role.
"""

import importlib.util
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from loadtests import inventory as inventory_facts

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "harness_capacity", REPO / "roles" / "preflight" / "filter_plugins" / "harness_capacity.py")
capacity = importlib.util.module_from_spec(_spec)
sys.modules["harness_capacity"] = capacity
_spec.loader.exec_module(capacity)


@pytest.mark.parametrize("text, value", [
    ("1", Decimal(1)), ("500m", Decimal("0.5")), ("2.5", Decimal("2.5")), ("7910m", Decimal("7.91")),
    ("2Gi", Decimal(2 * 2**30)), ("512Mi", Decimal(512 * 2**20)), ("1G", Decimal(10**9)), ("1e3", Decimal(1000)),
    ("1E", Decimal(10**18)), (".5", Decimal("0.5")), (4, Decimal(4)),
])
def test_kubernetes_quantities_parse(text, value):
    assert capacity.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["1 core", "32GB", "2gi", "", "one", "1.5.2", " 1", "1e", True, None, [1]])
def test_what_kubernetes_refuses_does_not_parse(text):
    assert capacity.parse_quantity(text) is None


def pool(**kw):
    return {"name": "gpu", "node_count": 1, "gpus_per_node": 1, "time_slicing_replicas": 4, "cpu": "8",
            "memory": "32Gi", **kw}


def svc(name, minimum, gpu=1, cpu="1", memory="2Gi", **kw):
    return {"name": name, "gpu": gpu, "resources": {"cpu": cpu, "memory": memory}, "hpa": {"min": minimum}, **kw}


def test_slots_are_per_node_not_summed():
    # 2 nodes x 3 slots = 6 slots in all; three 2-slot pods need 6, but only one fits on each node.
    result = capacity.placement([pool(node_count=2, time_slicing_replicas=3)], [svc("a", 3, gpu=2)])
    assert not result["ok"] and result["unplaced"] == ["a"], result
    assert capacity.placement([pool(node_count=3, time_slicing_replicas=3)], [svc("a", 3, gpu=2)])["ok"]


def test_four_one_cpu_workers_do_not_fit_a_g5_xlarge():
    g5 = pool(cpu="3920m", memory="14Gi")  # 4 vCPU less the EKS AMI's kube-reserved
    result = capacity.placement([g5], [svc("stt", 2), svc("tts", 2)], "eks")
    assert not result["ok"] and "cpu=3920m" in result["message"] and "eks target" in result["message"]
    assert capacity.placement([pool(cpu="7910m", memory="29Gi")], [svc("stt", 2), svc("tts", 2)])["ok"]


def test_memory_counts_per_node():
    result = capacity.placement([pool(node_count=2, memory="5Gi")], [svc("a", 4, memory="2Gi")])
    assert result["ok"], result  # two per node
    assert not capacity.placement([pool(node_count=2, memory="5Gi")], [svc("a", 5, memory="2Gi")])["ok"]


def test_disabled_services_take_no_room():
    services = [svc("stt", 4), svc("mt", 4, enabled=False)]
    assert capacity.placement([pool()], services)["ok"]
    assert not capacity.placement([pool()], [svc("stt", 4), svc("mt", 1, enabled=True)])["ok"]


def test_quantity_problems_name_the_value():
    problems = capacity.quantity_problems([pool(memory="32GB")], [svc("stt", 1, cpu="1 core"),
                                                                  svc("tts", 1, memory="2Gi") | {"resources": {
                                                                      "memory": "2Gi", "memory_limit": "1Gi"}}])
    assert any("harness_gpu_node_pools[0] (name=gpu).memory='32GB'" in p for p in problems), problems
    assert any("harness_services[0] (name=stt).resources.cpu='1 core'" in p for p in problems), problems
    assert any("memory_limit='1Gi' is less than the memory request '2Gi'" in p for p in problems), problems
    assert capacity.quantity_problems([pool()], [svc("stt", 1)]) == []


def test_the_shipped_inventories_fit():
    for target in ("gke", "eks", "self_managed"):
        services = inventory_facts.services(REPO / "inventories" / target, enabled_only=False)
        gpu = yaml.safe_load((REPO / f"inventories/{target}/group_vars/all/gpu.yml").read_text())
        pools = gpu["harness_gpu_node_pools"]
        assert capacity.placement(pools, services, target)["ok"], target


def test_the_preflight_knows_the_workers_the_worker_serves():
    from workers.core.common import ENGINES

    known = yaml.safe_load((REPO / "roles/preflight/vars/main.yml").read_text())["_preflight_worker_services"]
    assert sorted(known) == sorted(ENGINES)


@pytest.mark.parametrize("command, name, expected", [
    (["python", "-m", "workers.worker", "--service", "mt"], "mt", "mt"),
    (["python", "-m", "workers.worker", "--service=tts"], "x", "tts"),
    (["python", "-m", "workers.worker"], "stt", "stt"),  # SERVICE = the service's name
    (["/opt/mt/serve"], "mt", None),  # not workers.worker: the preflight cannot judge it
])
def test_the_worker_a_command_asks_for(command, name, expected):
    assert capacity.worker_service({"name": name, "command": command}) == expected
