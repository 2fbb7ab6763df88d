"""The simulated GPU source: inventory parsing, slot placement and the load arithmetic, with the
python client's own V1Node/V1Pod models as input."""

from __future__ import annotations

import pytest
from exporters_helpers import cpu_node, gpu_node, gpu_pod
from kubernetes.client import V1Container, V1ResourceRequirements

from workers.gpu.cluster import InventoryError, build_inventory, parse_node, parse_pod
from workers.gpu.simulated import (
    SimulationModel,
    assign_slots,
    gpu_uuid,
    model_name,
    simulate,
)


def test_node_labels_give_gpus_replicas_and_slots():
    node = parse_node(gpu_node("gpu-l4-0", gpus=2, replicas=4))
    assert (node.gpus, node.replicas, node.slots) == (2, 4, 8)
    assert node.product == "NVIDIA-L4"
    assert node.memory_mib == 23034
    assert node.instance_type == "g2-standard-8"


def test_gpu_count_falls_back_to_capacity_over_replicas():
    node = parse_node(gpu_node("n", gpus=2, replicas=4, count_label=False))
    assert node.gpus == 2


def test_node_without_gpus_is_not_a_gpu_node():
    assert parse_node(cpu_node("system-0")) is None


def test_bad_label_value_names_node_label_and_value():
    node = gpu_node("gpu-l4-3", extra_labels={"nvidia.com/gpu.replicas": "four"})
    with pytest.raises(InventoryError, match=r"node gpu-l4-3: label nvidia.com/gpu.replicas='four'"):
        parse_node(node)


def test_only_running_bound_gpu_pods_count():
    assert parse_pod(gpu_pod("stt-a-1", "n", phase="Pending")) is None
    assert parse_pod(gpu_pod("stt-a-2", None)) is None
    cpu_only = gpu_pod(
        "gw-1",
        "n",
        containers=[V1Container(name="gw", resources=V1ResourceRequirements(requests={"cpu": "1"}))],
    )
    assert parse_pod(cpu_only) is None
    # Extended resources may be given as limits only; the request defaults to the limit.
    assert parse_pod(gpu_pod("stt-a-3", "n", gpus=2, limits_only=True)).gpu_request == 2


def test_slots_fill_in_creation_order_and_map_to_gpu_i_div_replicas():
    node = parse_node(gpu_node("n0", gpus=2, replicas=4))
    # Names sort opposite to creation order: placement must follow creation time.
    pods = [parse_pod(gpu_pod(f"stt-x-{9 - i}", "n0", minutes=i)) for i in range(6)]
    result = assign_slots(node, pods)
    by_pod = {p.pod.name: p.gpu_index for p in result.placements}
    assert by_pod == {"stt-x-9": 0, "stt-x-8": 0, "stt-x-7": 0, "stt-x-6": 0, "stt-x-5": 1, "stt-x-4": 1}
    assert result.unplaced == []


def test_pod_spanning_two_gpus_is_placed_on_both():
    node = parse_node(gpu_node("n0", gpus=2, replicas=4))
    pods = [
        parse_pod(gpu_pod("stt-a-1", "n0", gpus=3, minutes=0)),  # slots 0,1,2 -> gpu 0
        parse_pod(gpu_pod("tts-b-1", "n0", gpus=2, minutes=1, service="tts")),  # slots 3,4 -> gpus 0 and 1
    ]
    result = assign_slots(node, pods)
    assert sorted((p.pod.name, p.gpu_index) for p in result.placements) == [
        ("stt-a-1", 0),
        ("tts-b-1", 0),
        ("tts-b-1", 1),
    ]


def test_more_slots_than_node_has_are_reported_unplaced():
    node = parse_node(gpu_node("n0", gpus=1, replicas=2))
    pods = [parse_pod(gpu_pod(f"stt-a-{i}", "n0", minutes=i)) for i in range(3)]
    result = assign_slots(node, pods)
    assert [p.pod.name for p in result.placements] == ["stt-a-0", "stt-a-1"]
    assert [(pod.name, c) for pod, c in result.unplaced] == [("stt-a-2", "worker")]


def _readings_by(readings, **match):
    return [r for r in readings if all(getattr(r, k) == v for k, v in match.items())]


def test_utilisation_is_sum_of_busy_ratios_of_pods_on_the_gpu_capped_at_100():
    inventory = build_inventory(
        [gpu_node("n0", gpus=2, replicas=4), cpu_node("system-0")],
        [
            gpu_pod("stt-a-1", "n0", minutes=0),
            gpu_pod("stt-a-2", "n0", minutes=1),
            gpu_pod("stt-a-3", "n0", minutes=2),
            gpu_pod("stt-a-4", "n0", minutes=3),
            gpu_pod("tts-b-1", "n0", minutes=4, service="tts"),
        ],
    )
    busy = {
        ("model-serving", "stt-a-1"): 0.5,
        ("model-serving", "stt-a-2"): 0.25,
        ("model-serving", "stt-a-3"): 0.25,
        ("model-serving", "stt-a-4"): 0.4,  # gpu 0 sums to 1.4 -> capped at 100
        ("model-serving", "tts-b-1"): 0.3,  # alone on gpu 1
    }
    readings, unplaced = simulate(inventory, busy)
    assert unplaced == []
    gpu0 = _readings_by(readings, hostname="n0", gpu="0")
    gpu1 = _readings_by(readings, hostname="n0", gpu="1")
    assert sorted(r.pod for r in gpu0) == ["stt-a-1", "stt-a-2", "stt-a-3", "stt-a-4"]
    assert {r.util_percent for r in gpu0} == {100.0}
    assert [(r.pod, r.container, r.namespace) for r in gpu1] == [("tts-b-1", "worker", "model-serving")]
    assert gpu1[0].util_percent == pytest.approx(30.0)
    assert all(r.source == "simulated" for r in readings)
    # One physical GPU keeps one UUID in all its per-pod series, and the UUID is stable.
    assert {r.uuid for r in gpu0} == {gpu_uuid("n0", 0)}
    assert gpu_uuid("n0", 0) == gpu_uuid("n0", 0) != gpu_uuid("n0", 1)


def test_shared_gpu_series_carry_vgpu_like_dcgm_exporter_with_virtual_gpus():
    """dcgm-exporter with --kubernetes-virtual-gpus (how the gpu_operator role runs it under time-slicing, see
    roles/autoscaling/README.md): one series per sharing pod, label vgpu = the replica index of its slot, each
    with the whole device's value. An unshared GPU (replicas 1) has no vgpu label."""
    inventory = build_inventory(
        [gpu_node("n0", gpus=2, replicas=4), gpu_node("n1", gpus=1, replicas=1)],
        [gpu_pod(f"stt-a-{i}", "n0", minutes=i) for i in range(5)] + [gpu_pod("tts-b-1", "n1", service="tts")],
    )
    busy = {("model-serving", f"stt-a-{i}"): 0.1 for i in range(5)}
    readings, _ = simulate(inventory, busy)
    gpu0 = _readings_by(readings, hostname="n0", gpu="0")
    assert [(r.pod, r.vgpu) for r in sorted(gpu0, key=lambda r: r.pod)] == [
        ("stt-a-0", "0"), ("stt-a-1", "1"), ("stt-a-2", "2"), ("stt-a-3", "3")]
    assert [r.util_percent for r in gpu0] == pytest.approx([40.0] * 4), "every sharing pod sees the device value"
    assert [(r.pod, r.vgpu) for r in _readings_by(readings, hostname="n0", gpu="1")] == [("stt-a-4", "0")]
    assert [(r.pod, r.vgpu) for r in _readings_by(readings, hostname="n1")] == [("tts-b-1", "")]


def test_idle_gpu_has_one_series_with_empty_pod_labels_and_missing_busy_ratio_counts_as_idle():
    inventory = build_inventory(
        [gpu_node("n0", gpus=1, replicas=4), gpu_node("n1", gpus=1, replicas=4)],
        [gpu_pod("stt-a-1", "n0")],
    )
    readings, _ = simulate(inventory, {})
    n1 = _readings_by(readings, hostname="n1")
    assert len(n1) == 1 and (n1[0].namespace, n1[0].pod, n1[0].container) == ("", "", "")
    assert n1[0].util_percent == 0.0
    n0 = _readings_by(readings, hostname="n0")
    assert [r.pod for r in n0] == ["stt-a-1"] and n0[0].util_percent == 0.0


def test_memory_power_and_temperature_follow_the_documented_lines():
    model = SimulationModel(
        memory_idle_mib=100,
        memory_per_pod_mib=1000,
        memory_per_busy_mib=2000,
        temp_idle_celsius=30,
        temp_max_celsius=80,
    )
    inventory = build_inventory(
        [gpu_node("n0", gpus=1, replicas=4, memory_mib=23034, product="NVIDIA-L4")],
        [gpu_pod("stt-a-1", "n0", minutes=0), gpu_pod("stt-a-2", "n0", minutes=1)],
    )
    busy = {("model-serving", "stt-a-1"): 0.5, ("model-serving", "stt-a-2"): 0.25}
    readings, _ = simulate(inventory, busy, model)
    r = readings[0]
    assert r.util_percent == pytest.approx(75.0)
    assert r.fb_used_mib == pytest.approx(100 + 2 * 1000 + 0.75 * 2000)
    assert r.fb_free_mib == pytest.approx(23034 - r.fb_used_mib)
    assert r.power_watts == pytest.approx(16 + 0.75 * (72 - 16))  # L4: 16 W idle, 72 W board power
    assert r.temp_celsius == pytest.approx(30 + 0.75 * 50)
    assert r.model_name == "NVIDIA L4"


def test_memory_is_capped_at_the_gpu_size():
    model = SimulationModel(memory_per_pod_mib=10000, memory_per_busy_mib=10000)
    inventory = build_inventory(
        [gpu_node("n0", gpus=1, replicas=4, memory_mib=16000)],
        [gpu_pod(f"stt-a-{i}", "n0", minutes=i) for i in range(3)],
    )
    readings, _ = simulate(inventory, {("model-serving", "stt-a-0"): 1.0}, model)
    assert {(r.fb_used_mib, r.fb_free_mib) for r in readings} == {(16000.0, 0.0)}


def test_model_name_from_gfd_product_label():
    assert model_name("NVIDIA-A100-SXM4-40GB") == "NVIDIA A100 SXM4 40GB"
    assert model_name("NVIDIA-L4-SHARED") == "NVIDIA L4"
