"""The cost model (shared DESIGN "Cost model"), as pure functions of the cluster's GPU inventory.

- A pod's GPU share = its ``nvidia.com/gpu`` request / the node's GPU slots (GPUs x time-slicing replicas).
- Node price per hour from the price table; per-GPU price = node price / physical GPUs on the node.
- Service cost per hour = sum over its pods of share x node price.
- GPU-hours: a pod holding share s of a node with g GPUs holds s x g physical GPUs.

Cost is attributed by *request share*, not by usage. Under time slicing, DCGM reports each shared
GPU's device-wide numbers to every pod on it: per-pod usage is not isolated, so usage-based
attribution is not possible from DCGM. A pod that holds a slot pays for it whether busy or idle,
which is also how the cloud bills the node.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from workers.cost.config import ServiceConfig
from workers.cost.pricing import NodePrice, PriceTable, UnpricedNode, price_node
from workers.gpu.cluster import GpuInventory


@dataclass(frozen=True)
class ServiceCost:
    service: str
    namespace: str
    cost_per_hour: float = 0.0
    pods: int = 0
    # physical GPU equivalents held, by GPU type
    gpus_by_type: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CostSnapshot:
    nodes: tuple[NodePrice, ...]
    services: dict[str, ServiceCost]
    unpriced_nodes: tuple[str, ...]
    # Running GPU pods on priced nodes that belong to no configured service.
    unattributed_pods: int
    # Why nodes are unpriced, for the log.
    problems: tuple[str, ...] = ()


def compute_costs(
    inventory: GpuInventory, table: PriceTable, services: tuple[ServiceConfig, ...], service_label: str
) -> CostSnapshot:
    prices: dict[str, NodePrice] = {}
    unpriced: list[str] = []
    problems: list[str] = []
    for node in inventory.nodes:
        try:
            prices[node.name] = price_node(table, node)
        except UnpricedNode as exc:
            unpriced.append(node.name)
            problems.append(str(exc))
    by_key = {(s.namespace, s.name): s for s in services}
    cost: dict[str, float] = defaultdict(float)
    pods: dict[str, int] = defaultdict(int)
    gpus: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    unattributed = 0
    for pod in inventory.pods:
        price = prices.get(pod.node)
        node = inventory.node(pod.node)
        if price is None or node is None:
            continue
        svc = by_key.get((pod.namespace, pod.labels.get(service_label, "")))
        if svc is None:
            unattributed += 1
            continue
        share = pod.gpu_request / node.slots
        cost[svc.name] += share * price.node_price_per_hour
        pods[svc.name] += 1
        gpus[svc.name][price.gpu_type] += share * node.gpus
    return CostSnapshot(
        nodes=tuple(prices[n] for n in sorted(prices)),
        services={
            s.name: ServiceCost(s.name, s.namespace, cost[s.name], pods[s.name], dict(gpus[s.name]))
            for s in services
        },
        unpriced_nodes=tuple(unpriced),
        unattributed_pods=unattributed,
        problems=tuple(problems),
    )


def cost_per_job(cost_per_hour: float, completed_per_second: float | None) -> float | None:
    """Service cost per second / completed jobs per second; None when no job completed in the window
    (the cost of an idle service is not a per-job figure; IdleGPU and the budget alerts cover it)."""
    if completed_per_second is None or completed_per_second <= 0:
        return None
    return cost_per_hour / 3600.0 / completed_per_second
