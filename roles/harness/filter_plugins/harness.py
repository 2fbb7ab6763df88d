"""Filters shared by every role: the arithmetic the roles' Jinja used to do inline, in one place with tests.

Pure functions of the inventory and of API objects the roles read (no cluster is asked).
tests/roles/test_harness_filters.py tests them directly,
and loadtests/envelope.py loads this file to compute the policy the HPA was given with the same code that
rendered it, so the judge and the template cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

# Kubernetes' defaults when a behavior names no stabilization window (autoscaling/v2 API reference).
DEFAULT_UP_STABILIZATION_S = 0
DEFAULT_DOWN_STABILIZATION_S = 300


class HarnessFilterError(ValueError):
    """A value these filters cannot use; the message names it and what is allowed."""


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HarnessFilterError(f"{what}={value!r}: a number is required")
    return float(value)


def scaled_seconds(seconds: Any, time_scale: Any, minimum: int = 0) -> int:
    """``seconds`` divided by the profile's time scale, rounded half up, at least ``minimum``.

    (The HPA template used to do this with Jinja's ``round``, which is Python's round-half-to-even, while the
    load-test judge rounded half up: 45 s on the fast profile gave 4 in one and 5 in the other.)
    """
    s = _number(seconds, "seconds")
    k = _number(time_scale, "time_scale")
    if k <= 0:
        raise HarnessFilterError(f"time_scale={time_scale!r}: must be > 0")
    if s < 0:
        raise HarnessFilterError(f"seconds={seconds!r}: must be >= 0")
    return max(int(minimum), math.floor(s / k + 0.5))


def _rules(raw: Mapping[str, Any], k: Any, default_window: int, where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise HarnessFilterError(f"{where}={raw!r}: a mapping with period_seconds and percent and/or pods is required")
    if "period_seconds" not in raw:
        raise HarnessFilterError(f"{where}: period_seconds is required")
    if "percent" not in raw and "pods" not in raw:
        raise HarnessFilterError(f"{where}: give percent, pods or both")
    period = scaled_seconds(raw["period_seconds"], k, minimum=1)
    policies = [
        {"type": kind, "value": int(_number(raw[key], f"{where}.{key}")), "periodSeconds": period}
        for key, kind in (("percent", "Percent"), ("pods", "Pods"))
        if key in raw
    ]
    window = scaled_seconds(raw.get("stabilization_seconds", default_window), k)
    return {"stabilizationWindowSeconds": window, "selectPolicy": "Max", "policies": policies}


def hpa_behavior(hpa: Mapping[str, Any], time_scale: Any) -> dict[str, Any]:
    """The HPA ``behavior`` for a service table's ``hpa`` entry, periods and windows divided by ``time_scale``."""
    if not isinstance(hpa, Mapping):
        raise HarnessFilterError(f"hpa={hpa!r}: a mapping is required")
    return {
        "scaleUp": _rules(hpa.get("scale_up"), time_scale, DEFAULT_UP_STABILIZATION_S, "hpa.scale_up"),
        "scaleDown": _rules(hpa.get("scale_down"), time_scale, DEFAULT_DOWN_STABILIZATION_S, "hpa.scale_down"),
    }


def _pairs(services: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for svc in services:
        if not isinstance(svc, Mapping) or "name" not in svc:
            raise HarnessFilterError(f"service entry {svc!r}: a mapping with name (and queue) is required")
        out.append((str(svc["name"]), str(svc.get("queue", svc["name"]))))
    return out


def service_args(services: Iterable[Mapping[str, Any]], flag: str = "--service") -> list[str]:
    """``['--service=stt:stt', ...]``: name and queue of each service, for the doctor and the load test."""
    return [f"{flag}={name}:{queue}" for name, queue in _pairs(services)]


def queue_map(services: Iterable[Mapping[str, Any]]) -> str:
    """The QUEUES setting (``queue:service,...``) the gateway and the queue exporter read."""
    return ",".join(f"{queue}:{name}" for name, queue in _pairs(services))


GPU_RESOURCE = "nvidia.com/gpu"


def _gpu_quantity(resources: Any, where: str) -> int:
    if not isinstance(resources, Mapping):
        return 0
    for section in ("requests", "limits"):  # an extended resource may set only limits; requests then equal them
        values = resources.get(section) or {}
        if GPU_RESOURCE in values:
            raw = values[GPU_RESOURCE]
            try:
                return int(str(raw))
            except ValueError:
                raise HarnessFilterError(f"{where}: {GPU_RESOURCE}={raw!r} is not a whole number") from None
    return 0


def pod_gpu_request(pod: Mapping[str, Any]) -> int:
    """A pod's nvidia.com/gpu request as the scheduler counts it: the larger of its containers' sum and its
    largest init container (init containers run one at a time, before the others)."""
    spec = pod.get("spec") or {}
    name = (pod.get("metadata") or {}).get("name", "?")
    total = sum(_gpu_quantity(c.get("resources"), f"pod {name}") for c in spec.get("containers") or [])
    init = max((_gpu_quantity(c.get("resources"), f"pod {name}") for c in spec.get("initContainers") or []), default=0)
    return max(total, init)


def gpu_slots(pods: Iterable[Mapping[str, Any]], nodes: Iterable[Mapping[str, Any]], exclude_app: str = "") -> dict:
    """Free nvidia.com/gpu slots on ``nodes`` (entries with ``name`` and ``allocatable``): allocatable minus what
    the pods bound to them request; pods labelled ``app.kubernetes.io/name=<exclude_app>`` are not counted."""
    nodes = list(nodes)
    names = {str(n["name"]) for n in nodes}
    allocatable = sum(int(n.get("allocatable") or 0) for n in nodes)
    used = 0
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (pod.get("spec") or {}).get("nodeName") not in names:
            continue
        if exclude_app and (meta.get("labels") or {}).get("app.kubernetes.io/name") == exclude_app:
            continue
        used += pod_gpu_request(pod)
    return {"allocatable": allocatable, "used": used, "free": max(allocatable - used, 0)}


def cidr_host(cidr: Any, index: Any) -> str:
    """The ``index``-th address of an IPv4 network (1: the `kubernetes` Service of a Service CIDR, 10: the cluster
    DNS, the kubeadm convention). Refuses a value that is not a network address and an index outside its hosts."""
    try:
        net = ipaddress.IPv4Network(str(cidr), strict=True)
    except ValueError as e:
        raise HarnessFilterError(
            f"cidr={cidr!r}: an IPv4 network address like 10.96.0.0/16 is required ({e})") from None
    if net.prefixlen > 30:
        raise HarnessFilterError(
            f"cidr={cidr!r}: a network with host addresses (a prefix of /30 or shorter) is required")
    if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index < net.num_addresses - 1:
        raise HarnessFilterError(
            f"index={index!r}: a host number from 1 to {net.num_addresses - 2} is required for {cidr}")
    return str(net.network_address + index)


def ipv4_network_ok(cidr: Any, shortest: int = 8, longest: int = 30) -> bool:
    """Whether ``cidr`` is an IPv4 network address (no host bits) with a prefix from /shortest to /longest."""
    try:
        net = ipaddress.IPv4Network(str(cidr), strict=True)
    except ValueError:
        return False
    return isinstance(cidr, str) and "/" in cidr and shortest <= net.prefixlen <= longest


def cidrs_overlap(a: Any, b: Any) -> bool:
    """Whether two IPv4 networks share an address (false when either is not a network: the shape check names it)."""
    try:
        return ipaddress.IPv4Network(str(a), strict=False).overlaps(ipaddress.IPv4Network(str(b), strict=False))
    except ValueError:
        return False


class _Yaml12Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's safe loader, reading a plain ``=`` as the string "=" as YAML 1.2 (Go's YAML, kubectl) does.

    PyYAML follows YAML 1.1, where a plain ``=`` is the "value" type and has no constructor, so it fails on
    Kubernetes manifests that list ``=`` unquoted (prometheus-operator's CRDs: the enum of a matcher's matchType).
    libyaml's parser where PyYAML has it: the operator's CRDs (4.2 MB) parse 9.5 times faster (bench/manifest_parse.py,
    docs/performance.md), once per site.yml run (the constructor and resolver are the same Python classes either way).
    """


_Yaml12Loader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_scalar)


def manifests(text: Any, source: str = "manifest") -> list[Any]:
    """The documents of a multi-document Kubernetes manifest (empty documents dropped), read as kubectl reads them."""
    if not isinstance(text, str):
        raise HarnessFilterError(f"harness_manifests: {source} must be YAML text, got {type(text).__name__}")
    try:
        return [d for d in yaml.load_all(text, Loader=_Yaml12Loader) if d]
    except yaml.YAMLError as exc:
        raise HarnessFilterError(f"harness_manifests: {source} is not valid YAML: {exc}") from exc


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "harness_scaled_seconds": scaled_seconds,
            "harness_hpa_behavior": hpa_behavior,
            "harness_service_args": service_args,
            "harness_queue_map": queue_map,
            "harness_gpu_slots": gpu_slots,
            "harness_cidr_host": cidr_host,
            "harness_ipv4_network_ok": ipv4_network_ok,
            "harness_cidrs_overlap": cidrs_overlap,
            "harness_manifests": manifests,
        }
