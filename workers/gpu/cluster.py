"""GPU nodes and GPU pods as plain dataclasses, parsed from Kubernetes API objects.

Shared by the simulated GPU source and the cost exporter. The parsing functions take the client's
model objects (``V1Node``, ``V1Pod``) and are pure; ``list_gpu_inventory`` is the only function here
that talks to the API server.

Node facts come from the labels that NVIDIA GPU feature discovery publishes on real nodes (and that
the local target's kwok nodes carry): ``nvidia.com/gpu.count``, ``nvidia.com/gpu.replicas`` (time
slicing), ``nvidia.com/gpu.product`` and ``nvidia.com/gpu.memory`` (MiB). When the count label is
missing, the count is derived from the ``nvidia.com/gpu`` capacity divided by the replicas.

GKE's own device plugin (GKE-managed drivers, no GPU feature discovery) publishes none of NVIDIA's labels. With
GKE's native time-sharing it advertises ``max-shared-clients-per-gpu`` slots per physical GPU as
``nvidia.com/gpu`` and labels the node ``cloud.google.com/gke-max-shared-clients-per-gpu``: that label is the
replicas there (the time_slicing role's check reads the same label on GKE).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
# The containerPort a model worker serves /metrics on (roles/model_services' Deployments name it so).
METRICS_PORT_NAME = "metrics"
LABEL_GPU_COUNT = "nvidia.com/gpu.count"
LABEL_GPU_REPLICAS = "nvidia.com/gpu.replicas"
LABEL_GPU_PRODUCT = "nvidia.com/gpu.product"
LABEL_GPU_MEMORY = "nvidia.com/gpu.memory"
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_INSTANCE_TYPE_BETA = "beta.kubernetes.io/instance-type"
# GKE: the accelerator attached to an N1 machine, which is billed per GPU on top of the machine.
LABEL_GKE_ACCELERATOR = "cloud.google.com/gke-accelerator"
# GKE native GPU time-sharing: slots per physical GPU, when GKE's device plugin (not NVIDIA's) serves the node.
LABEL_GKE_MAX_SHARED_CLIENTS = "cloud.google.com/gke-max-shared-clients-per-gpu"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class InventoryError(ValueError):
    """A node or pod carries a value this module cannot interpret."""


@dataclass(frozen=True)
class GpuNode:
    name: str
    gpus: int
    replicas: int
    product: str
    memory_mib: int | None
    instance_type: str
    accelerator: str
    labels: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def slots(self) -> int:
        """Schedulable GPU slots: physical GPUs x time-slicing replicas."""
        return self.gpus * self.replicas


@dataclass(frozen=True)
class GpuContainer:
    name: str
    gpus: int


@dataclass(frozen=True)
class GpuPod:
    namespace: str
    name: str
    node: str
    containers: tuple[GpuContainer, ...]
    created: dt.datetime
    labels: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    annotations: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    # Where the pod's worker serves its metrics: the pod's IP (status.podIP, set by the kubelet) and the
    # containerPort named "metrics" of its GPU containers, the port Prometheus scrapes. Empty/None when the pod
    # has no IP yet or names no such port.
    pod_ip: str = field(default="", compare=False, repr=False)
    metrics_port: int | None = field(default=None, compare=False, repr=False)

    @property
    def gpu_request(self) -> int:
        return sum(c.gpus for c in self.containers)


@dataclass(frozen=True)
class GpuInventory:
    nodes: tuple[GpuNode, ...]
    pods: tuple[GpuPod, ...]

    def pods_on(self, node: str) -> list[GpuPod]:
        return [p for p in self.pods if p.node == node]

    def node(self, name: str) -> GpuNode | None:
        return next((n for n in self.nodes if n.name == name), None)


def _int_label(labels: dict[str, str], key: str, where: str) -> int | None:
    raw = labels.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InventoryError(f"{where}: label {key}={raw!r} is not an integer") from None
    if value < 0:
        raise InventoryError(f"{where}: label {key}={raw!r} must be >= 0")
    return value


def _quantity_int(raw: Any, where: str) -> int:
    """Extended resources such as nvidia.com/gpu are whole numbers ("1", not "500m")."""
    try:
        return int(str(raw))
    except ValueError:
        raise InventoryError(f"{where}: {GPU_RESOURCE}={raw!r} is not a whole number") from None


def parse_node(node: Any) -> GpuNode | None:
    """A GpuNode, or None when the node advertises no GPUs."""
    name = node.metadata.name
    labels = dict(node.metadata.labels or {})
    where = f"node {name}"
    replicas = (
        _int_label(labels, LABEL_GPU_REPLICAS, where) or _int_label(labels, LABEL_GKE_MAX_SHARED_CLIENTS, where) or 1
    )
    gpus = _int_label(labels, LABEL_GPU_COUNT, where)
    if gpus is None:
        capacity = (node.status.capacity or {}) if node.status else {}
        if GPU_RESOURCE not in capacity:
            return None
        gpus = _quantity_int(capacity[GPU_RESOURCE], where) // replicas
    if gpus == 0:
        return None
    return GpuNode(
        name=name,
        gpus=gpus,
        replicas=replicas,
        product=labels.get(LABEL_GPU_PRODUCT, ""),
        memory_mib=_int_label(labels, LABEL_GPU_MEMORY, where),
        instance_type=labels.get(LABEL_INSTANCE_TYPE) or labels.get(LABEL_INSTANCE_TYPE_BETA, ""),
        accelerator=labels.get(LABEL_GKE_ACCELERATOR, ""),
        labels=labels,
    )


def _container_gpus(container: Any, where: str) -> int:
    # Extended resources may set only limits; requests then default to the limits.
    res = container.resources
    if res is None:
        return 0
    for source in (res.requests or {}, res.limits or {}):
        if GPU_RESOURCE in source:
            return _quantity_int(source[GPU_RESOURCE], f"{where} container {container.name}")
    return 0


def parse_pod(pod: Any) -> GpuPod | None:
    """A GpuPod for a Running pod bound to a node that requests GPUs; None otherwise."""
    meta = pod.metadata
    if pod.status is None or pod.status.phase != "Running" or not pod.spec.node_name:
        return None
    where = f"pod {meta.namespace}/{meta.name}"
    containers = tuple(
        GpuContainer(c.name, n) for c in pod.spec.containers or [] if (n := _container_gpus(c, where)) > 0
    )
    if not containers:
        return None
    gpu_names = {c.name for c in containers}
    metrics_port = next(
        (
            port.container_port
            for c in pod.spec.containers or []
            if c.name in gpu_names
            for port in c.ports or []
            if port.name == METRICS_PORT_NAME
        ),
        None,
    )
    return GpuPod(
        namespace=meta.namespace,
        name=meta.name,
        node=pod.spec.node_name,
        containers=containers,
        created=meta.creation_timestamp or _EPOCH,
        labels=dict(meta.labels or {}),
        annotations=dict(meta.annotations or {}),
        pod_ip=pod.status.pod_ip or "",
        metrics_port=metrics_port,
    )


def build_inventory(nodes: list[Any], pods: list[Any]) -> GpuInventory:
    gpu_nodes = tuple(sorted((n for n in map(parse_node, nodes) if n), key=lambda n: n.name))
    gpu_pods = tuple(p for p in map(parse_pod, pods) if p)
    return GpuInventory(nodes=gpu_nodes, pods=gpu_pods)


def list_gpu_inventory(core_v1: Any, timeout_seconds: float = 10.0, node_selector: str = "") -> GpuInventory:
    """Read the nodes (all, or those matching ``node_selector``) and the Running pods of all namespaces."""
    nodes = core_v1.list_node(label_selector=node_selector, _request_timeout=timeout_seconds).items
    pods = core_v1.list_pod_for_all_namespaces(
        field_selector="status.phase=Running", _request_timeout=timeout_seconds
    ).items
    return build_inventory(nodes, pods)


def load_core_v1(kubeconfig: str | None) -> Any:
    """A CoreV1Api from the given kubeconfig file, or in-cluster config when it is None."""
    from kubernetes import client, config

    if kubeconfig:
        api_client = config.new_client_from_config(config_file=kubeconfig)
        return client.CoreV1Api(api_client)
    config.load_incluster_config()
    return client.CoreV1Api()
