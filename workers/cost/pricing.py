"""The GPU price table: defaults from ``default_prices.yml``, overridable per inventory.

A node's price per hour comes from its instance type (label ``node.kubernetes.io/instance-type``).
For machines with bundled GPUs (g2, a2, g4dn, g5, g6, p4d) the entry's price covers the whole machine.
For machines with attached accelerators (GKE N1 + T4; entry ``gpus: 0``) the accelerator's per-GPU
price (label ``cloud.google.com/gke-accelerator``) times the node's GPU count is added.
The price of one GPU on a node = node price / physical GPUs on the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from workers.gpu.cluster import GpuNode
from workers.gpu.settings import ConfigError, number

DEFAULT_PRICES_FILE = Path(__file__).with_name("default_prices.yml")


@dataclass(frozen=True)
class InstancePrice:
    price_per_hour: float
    gpus: int
    gpu_type: str


@dataclass(frozen=True)
class AcceleratorPrice:
    price_per_gpu_hour: float
    gpu_type: str


@dataclass(frozen=True)
class PriceTable:
    instance_types: Mapping[str, InstancePrice]
    accelerators: Mapping[str, AcceleratorPrice]
    source: str
    as_of: str
    currency: str = "USD"


@dataclass(frozen=True)
class NodePrice:
    node: str
    instance_type: str
    gpu_type: str
    gpus: int
    node_price_per_hour: float

    @property
    def gpu_price_per_hour(self) -> float:
        return self.node_price_per_hour / self.gpus


class UnpricedNode(LookupError):
    pass


def _instance(name: str, raw: Any) -> InstancePrice:
    where = f"price table instance_types[{name!r}]"
    if not isinstance(raw, Mapping) or "price_per_hour" not in raw:
        raise ConfigError(f"{where}={raw!r}: must be a mapping with price_per_hour (and gpus, gpu_type)")
    unknown = set(raw) - {"price_per_hour", "gpus", "gpu_type"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: price_per_hour, gpus, gpu_type")
    gpus = raw.get("gpus", 1)
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 0:
        raise ConfigError(f"{where}.gpus={gpus!r}: must be an integer >= 0 (0: accelerators billed per GPU)")
    return InstancePrice(
        price_per_hour=number(f"{where}.price_per_hour", raw["price_per_hour"]),
        gpus=gpus,
        gpu_type=str(raw.get("gpu_type") or ""),
    )


def _accelerator(name: str, raw: Any) -> AcceleratorPrice:
    where = f"price table accelerators[{name!r}]"
    if not isinstance(raw, Mapping) or "price_per_gpu_hour" not in raw:
        raise ConfigError(f"{where}={raw!r}: must be a mapping with price_per_gpu_hour (and gpu_type)")
    return AcceleratorPrice(
        number(f"{where}.price_per_gpu_hour", raw["price_per_gpu_hour"]), str(raw.get("gpu_type") or "")
    )


def _mapping(where: str, raw: Any) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}={raw!r}: must be a mapping")
    return raw


def build_price_table(defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> PriceTable:
    """Defaults merged with overrides entry by entry (an override replaces a whole entry)."""
    overrides = _mapping("prices", overrides)
    instances = {
        **_mapping("instance_types", defaults.get("instance_types")),
        **_mapping("prices.instance_types", overrides.get("instance_types")),
    }
    accelerators = {
        **_mapping("accelerators", defaults.get("accelerators")),
        **_mapping("prices.accelerators", overrides.get("accelerators")),
    }
    return PriceTable(
        instance_types={k: _instance(k, v) for k, v in instances.items()},
        accelerators={k: _accelerator(k, v) for k, v in accelerators.items()},
        source=str(overrides.get("source") or defaults.get("source", "")),
        as_of=str(overrides.get("as_of") or defaults.get("as_of", "")),
        currency=str(overrides.get("currency") or defaults.get("currency", "USD")),
    )


def load_default_prices(path: Path = DEFAULT_PRICES_FILE) -> Mapping[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def price_node(table: PriceTable, node: GpuNode) -> NodePrice:
    entry = table.instance_types.get(node.instance_type)
    if entry is None:
        shown = node.instance_type or "(no node.kubernetes.io/instance-type label)"
        raise UnpricedNode(
            f"node {node.name}: instance type {shown!r} is not in the price table; "
            "add it to cost_tracking_price_overrides"
        )
    price = entry.price_per_hour
    gpu_type = entry.gpu_type or node.product
    if entry.gpus == 0:
        acc = table.accelerators.get(node.accelerator)
        if acc is None:
            raise UnpricedNode(
                f"node {node.name}: instance type {node.instance_type!r} bills accelerators separately, and "
                f"accelerator {node.accelerator or '(no cloud.google.com/gke-accelerator label)'!r} "
                "is not in the price table"
            )
        price += acc.price_per_gpu_hour * node.gpus
        gpu_type = acc.gpu_type or node.product
    return NodePrice(node.name, node.instance_type, gpu_type, node.gpus, price)
