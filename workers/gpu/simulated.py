"""Simulated GPUs for nodes without GPUs (kwok nodes on the local target): the pure arithmetic.

Placement. The device plugin hands each container a set of GPU slots (with time slicing a physical GPU
appears as ``replicas`` slots). Here the Running pods of a node are ordered by (creation time,
namespace, name), their GPU-requesting containers in spec order, and each container takes the next
free slots; slot ``i`` lives on physical GPU ``i // replicas``. The order is deterministic from the
cluster state, and new pods go to the end, so existing pods keep their GPU while others come.
Containers whose slots would exceed the node's slots (labels that disagree with capacity) are reported
as unplaced rather than silently doubled up.

Load. A GPU's utilisation follows the workers placed on it:
``util% = min(100, 100 * sum of the busy ratios of the distinct pods on that GPU)``.
From utilisation the other fields follow simple, deterministic lines (all parameters in
``SimulationModel``):
  framebuffer used = idle + per pod resident (the model) + busy ratio x per pod working set,
  capped at the GPU's memory;
  power = idle W + util/100 x (TDP - idle W), per GPU product;
  temperature = idle C + util/100 x (max C - idle C).

Series. dcgm-exporter on a real cluster, run with --kubernetes-virtual-gpus as the gpu_operator role runs it
under time slicing, labels a GPU's readings with each pod the GPU is assigned to, adds ``vgpu`` (the replica
index of the pod's slot on that GPU), and every pod sharing a GPU sees the whole device's numbers (per-pod usage
is not isolated). This source does the same: one reading per (GPU, pod, container) with the device values and
``vgpu`` = the container's first slot on that GPU modulo ``replicas`` (empty when the node does not share GPUs),
and one reading with empty pod labels for a GPU that has no pods.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from workers.gpu.cluster import GpuInventory, GpuNode, GpuPod
from workers.gpu.readings import GpuReading

SOURCE = "simulated"
_UUID_NAMESPACE = uuid.UUID("8d6f0a52-4b7e-4a4c-9f0e-3d1c2b6a7e10")


@dataclass(frozen=True)
class PowerProfile:
    idle_watts: float
    tdp_watts: float


# Board power limits from NVIDIA's data sheets; idle draws are typical nvidia-smi readings at P8.
POWER_PROFILES: dict[str, PowerProfile] = {
    "NVIDIA-L4": PowerProfile(16.0, 72.0),
    "Tesla-T4": PowerProfile(10.0, 70.0),
    "NVIDIA-A10G": PowerProfile(25.0, 300.0),
    "NVIDIA-A100-SXM4-40GB": PowerProfile(55.0, 400.0),
    "NVIDIA-A100-SXM4-80GB": PowerProfile(60.0, 400.0),
    "NVIDIA-H100-80GB-HBM3": PowerProfile(70.0, 700.0),
}


@dataclass(frozen=True)
class SimulationModel:
    memory_idle_mib: float = 0.0
    memory_per_pod_mib: float = 1024.0
    memory_per_busy_mib: float = 2048.0
    # Used when a node has no nvidia.com/gpu.memory label.
    default_memory_mib: int = 16384
    temp_idle_celsius: float = 35.0
    temp_max_celsius: float = 80.0
    default_power: PowerProfile = PowerProfile(30.0, 300.0)
    power_profiles: Mapping[str, PowerProfile] = field(default_factory=lambda: dict(POWER_PROFILES))

    def power_for(self, product: str) -> PowerProfile:
        return self.power_profiles.get(base_product(product), self.default_power)


@dataclass(frozen=True)
class Placement:
    node: str
    gpu_index: int
    pod: GpuPod
    container: str
    # The replica index of the container's first slot on this GPU; "" when GPUs are not shared.
    vgpu: str = ""


@dataclass(frozen=True)
class PlacementResult:
    placements: list[Placement]
    unplaced: list[tuple[GpuPod, str]]


def base_product(product: str) -> str:
    """GFD appends -SHARED to the product label when time-slicing renames the resource."""
    return product.removesuffix("-SHARED")


def model_name(product: str) -> str:
    """DCGM's modelName ("NVIDIA L4") from GFD's product label ("NVIDIA-L4")."""
    return base_product(product).replace("-", " ") or "Simulated GPU"


def gpu_uuid(node: str, index: int) -> str:
    """Stable per node and index, so series keep their identity across exporter restarts."""
    return f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{node}/{index}')}"


def assign_slots(node: GpuNode, pods: list[GpuPod]) -> PlacementResult:
    ordered = sorted(pods, key=lambda p: (p.created, p.namespace, p.name))
    placements: list[Placement] = []
    unplaced: list[tuple[GpuPod, str]] = []
    next_slot = 0
    for pod in ordered:
        for container in pod.containers:
            slots = range(next_slot, next_slot + container.gpus)
            next_slot += container.gpus
            if slots.stop > node.slots:
                unplaced.append((pod, container.name))
                continue
            # A container with several slots on one GPU is one placement on that GPU.
            for gpu_index in sorted({s // node.replicas for s in slots}):
                first = min(s for s in slots if s // node.replicas == gpu_index)
                vgpu = str(first % node.replicas) if node.replicas > 1 else ""
                placements.append(Placement(node.name, gpu_index, pod, container.name, vgpu))
    return PlacementResult(placements, unplaced)


def gpu_utilisation(busy_ratios: list[float]) -> float:
    return min(100.0, 100.0 * sum(busy_ratios))


def _device_values(
    node: GpuNode, util: float, pod_busy: list[float], model: SimulationModel
) -> tuple[float, float, float, float]:
    total = float(node.memory_mib or model.default_memory_mib)
    used = model.memory_idle_mib + sum(
        model.memory_per_pod_mib + b * model.memory_per_busy_mib for b in pod_busy
    )
    used = min(total, used)
    power = model.power_for(node.product)
    watts = power.idle_watts + util / 100.0 * (power.tdp_watts - power.idle_watts)
    temp = model.temp_idle_celsius + util / 100.0 * (model.temp_max_celsius - model.temp_idle_celsius)
    return used, total - used, watts, temp


def simulate(
    inventory: GpuInventory,
    busy_ratios: Mapping[tuple[str, str], float],
    model: SimulationModel | None = None,
) -> tuple[list[GpuReading], list[tuple[GpuPod, str]]]:
    """Readings for every GPU of every node, plus the containers that could not be placed.

    ``busy_ratios`` maps (namespace, pod) to the worker's busy ratio in [0, 1]; a pod missing from it
    counts as idle (the caller reports how many were missing).
    """
    model = model or SimulationModel()
    readings: list[GpuReading] = []
    unplaced: list[tuple[GpuPod, str]] = []
    for node in inventory.nodes:
        result = assign_slots(node, inventory.pods_on(node.name))
        unplaced.extend(result.unplaced)
        for index in range(node.gpus):
            on_gpu = [p for p in result.placements if p.gpu_index == index]
            distinct_pods = {(p.pod.namespace, p.pod.name): p.pod for p in on_gpu}
            pod_busy = [_clamp01(busy_ratios.get(key, 0.0)) for key in distinct_pods]
            util = gpu_utilisation(pod_busy)
            used, free, watts, temp = _device_values(node, util, pod_busy, model)
            common = dict(
                gpu=str(index),
                uuid=gpu_uuid(node.name, index),
                model_name=model_name(node.product),
                hostname=node.name,
                util_percent=util,
                fb_used_mib=used,
                fb_free_mib=free,
                power_watts=watts,
                temp_celsius=temp,
                source=SOURCE,
            )
            if not on_gpu:
                readings.append(GpuReading(**common))
                continue
            for p in on_gpu:
                readings.append(
                    GpuReading(**common, namespace=p.pod.namespace, pod=p.pod.name, container=p.container, vgpu=p.vgpu)
                )
    return readings, unplaced


def _clamp01(value: float) -> float:
    return max(0.0, min(1.0, value))
