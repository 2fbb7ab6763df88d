"""Filters for the preflight role: Kubernetes quantities, and whether the services' minimum replicas fit the nodes.

Pure functions of the inventory (no cluster is asked): tests/targets/test_preflight_capacity.py tests them directly,
and the preflight molecule scenario through the role.
"""

from __future__ import annotations

from decimal import Decimal

# The Kubernetes client's own parser of resource.Quantity (the kubernetes package is a requirement of
# kubernetes.core, so it is there wherever these roles run).
from kubernetes.utils.quantity import parse_quantity as _k8s_parse_quantity

_BINARY = {"Gi": Decimal(2) ** 30, "Mi": Decimal(2) ** 20, "Ki": Decimal(2) ** 10}
QUANTITY_HELP = "a Kubernetes quantity such as 500m, 1, 2.5 (CPU) or 512Mi, 2Gi, 1G (memory)"
# Every service pod requests these when the service table names none (roles/model_services' Deployment template).
DEFAULT_REQUESTS = {"cpu": "1", "memory": "2Gi"}


def parse_quantity(value) -> Decimal | None:
    """The quantity's value in base units (cores, bytes), or None when it is not a Kubernetes quantity."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value)
    if text != text.strip():  # the API server refuses surrounding blanks; the client's parser would strip them
        return None
    try:
        return _k8s_parse_quantity(text)
    except ValueError:
        return None


def _fmt_cpu(cores: Decimal) -> str:
    milli = int(cores * 1000)
    return f"{milli // 1000}" if milli % 1000 == 0 else f"{milli}m"


def _fmt_mem(size: Decimal) -> str:
    for unit in ("Gi", "Mi", "Ki"):
        if size >= _BINARY[unit]:
            return f"{(size / _BINARY[unit]).quantize(Decimal('0.1')).normalize():f}{unit}"
    return f"{int(size)}"


def _enabled(services):
    return [s for s in services or [] if _truthy(s.get("enabled", True))]


def _truthy(v) -> bool:
    return v if isinstance(v, bool) else str(v).strip().lower() in ("1", "true", "yes", "on")


def quantity_problems(pools, services) -> list[str]:
    """A message for every CPU or memory quantity of the inventory that Kubernetes would not parse or accept."""
    problems = []
    for i, pool in enumerate(pools or []):
        for key in ("cpu", "memory"):
            if key not in pool:
                continue
            value = parse_quantity(pool[key])
            where = f"harness_gpu_node_pools[{i}] (name={pool.get('name')}).{key}={pool[key]!r}"
            if value is None:
                problems.append(f"{where} is not {QUANTITY_HELP}")
            elif value <= 0:
                problems.append(f"{where}: a node's allocatable {key} must be more than 0")
    for i, svc in enumerate(services or []):
        resources = svc.get("resources") or {}
        if not isinstance(resources, dict):
            problems.append(f"harness_services[{i}] (name={svc.get('name')}).resources must be a mapping "
                            f"such as {{cpu: '1', memory: 2Gi}}")
            continue
        parsed = {}
        for key in ("cpu", "memory", "memory_limit"):
            if key not in resources:
                continue
            where = f"harness_services[{i}] (name={svc.get('name')}).resources.{key}={resources[key]!r}"
            value = parse_quantity(resources[key])
            if value is None:
                problems.append(f"{where} is not {QUANTITY_HELP}")
            elif value < 0:
                problems.append(f"{where}: allowed is 0 or more")
            else:
                parsed[key] = value
        request = parsed.get("memory", parse_quantity(DEFAULT_REQUESTS["memory"]))
        if "memory_limit" in parsed and request is not None and parsed["memory_limit"] < request:
            problems.append(f"harness_services[{i}] (name={svc.get('name')}).resources.memory_limit="
                            f"{resources['memory_limit']!r} is less than the memory request "
                            f"{resources.get('memory', DEFAULT_REQUESTS['memory'])!r}: Kubernetes refuses a limit "
                            "below the request")
    return problems


def placement(pools, services, platform="local") -> dict:
    """Place the minimum replicas of the enabled services on the pools' nodes, one pod at a time.

    Each pod needs its GPU slots (`gpu`), CPU and memory on ONE node, beside the pods already there: slots are
    gpus_per_node x time_slicing_replicas per node, CPU and memory the pool's allocatable `cpu` and `memory`.
    Pods are placed largest first on the first node with room (first-fit decreasing). Nodes counted: node_count
    of each pool (what the inventory creates; this project installs no node autoscaler on EKS or self-managed
    clusters, and on GKE the pool starts at node_count). Returns {ok, placed, unplaced, message}.
    Only valid quantities are used: quantity_problems reports the others, and this returns ok when it cannot judge.
    """
    nodes = []
    for pool in pools or []:
        cpu = parse_quantity(pool.get("cpu", "8"))
        mem = parse_quantity(pool.get("memory", "32Gi"))
        try:
            slots = int(pool["gpus_per_node"]) * int(pool.get("time_slicing_replicas", 1))
            count = int(pool["node_count"])
        except (KeyError, TypeError, ValueError):
            return {"ok": True, "placed": [], "unplaced": [], "message": ""}
        if cpu is None or mem is None:
            return {"ok": True, "placed": [], "unplaced": [], "message": ""}
        for n in range(count):
            nodes.append({"pool": pool.get("name"), "index": n, "slots": slots, "cpu": cpu, "memory": mem,
                          "all": (slots, cpu, mem), "pods": []})
    pods = []
    for svc in _enabled(services):
        resources = svc.get("resources") or {}
        cpu = parse_quantity(resources.get("cpu", DEFAULT_REQUESTS["cpu"]))
        mem = parse_quantity(resources.get("memory", DEFAULT_REQUESTS["memory"]))
        try:
            gpu = int(svc.get("gpu", 1))
            replicas = int((svc.get("hpa") or {}).get("min", 1))
        except (TypeError, ValueError):
            return {"ok": True, "placed": [], "unplaced": [], "message": ""}
        if cpu is None or mem is None:
            return {"ok": True, "placed": [], "unplaced": [], "message": ""}
        pods += [{"service": svc.get("name"), "gpu": gpu, "cpu": cpu, "memory": mem} for _ in range(replicas)]
    pods.sort(key=lambda p: (p["gpu"], p["cpu"], p["memory"]), reverse=True)
    unplaced = []
    for pod in pods:
        node = next((n for n in nodes if n["slots"] >= pod["gpu"] and n["cpu"] >= pod["cpu"]
                     and n["memory"] >= pod["memory"]), None)
        if node is None:
            unplaced.append(pod)
            continue
        node["slots"] -= pod["gpu"]
        node["cpu"] -= pod["cpu"]
        node["memory"] -= pod["memory"]
        node["pods"].append(pod["service"])
    need = {}
    for pod in pods:
        need.setdefault(pod["service"], pod)
    if not unplaced:
        return {"ok": True, "placed": [{"node": f"{n['pool']}/{n['index']}", "pods": n["pods"]} for n in nodes],
                "unplaced": [], "message": ""}
    wants = ", ".join(
        f"{name} x{sum(1 for p in pods if p['service'] == name)} (gpu={p['gpu']}, cpu={_fmt_cpu(p['cpu'])}, "
        f"memory={_fmt_mem(p['memory'])} each)" for name, p in need.items())
    offers = ", ".join(
        f"{pool.get('name')}: {pool.get('node_count')} node(s) of "
        f"{int(pool['gpus_per_node']) * int(pool.get('time_slicing_replicas', 1))} GPU slots, "
        f"cpu={pool.get('cpu', '8')}, memory={pool.get('memory', '32Gi')}" for pool in pools)
    counts = {}
    for p in unplaced:
        counts[p["service"]] = counts.get(p["service"], 0) + 1
    left = ", ".join(f"{name} x{n} (gpu={need[name]['gpu']}, cpu={_fmt_cpu(need[name]['cpu'])}, "
                     f"memory={_fmt_mem(need[name]['memory'])})" for name, n in counts.items())
    message = (
        f"The minimum replicas of the enabled services do not fit on the GPU nodes of the {platform} target: "
        f"{len(unplaced)} of {len(pods)} pods find no node with room beside the others ({left}). "
        f"Wanted (hpa.min x resources): {wants}. Offered per node (allocatable): {offers}. "
        "A pod's GPU slots, CPU and memory must all fit on one node. Add nodes (node_count), use a larger "
        "instance_type with its allocatable cpu/memory, lower the requests, or lower hpa.min.")
    return {"ok": False, "placed": [{"node": f"{n['pool']}/{n['index']}", "pods": n["pods"]} for n in nodes],
            "unplaced": [p["service"] for p in unplaced], "message": message}


def worker_service(svc) -> str | None:
    """The service a `python -m workers.worker` command runs: its --service, else $SERVICE (the service's name).

    None when the command does not run workers.worker (an image of the user's own, which the preflight cannot judge).
    """
    command = [str(a) for a in svc.get("command") or []]
    if "workers.worker" not in command:
        return None
    name = svc.get("name")
    for i, arg in enumerate(command):
        if arg == "--service" and i + 1 < len(command):
            name = command[i + 1]
        elif arg.startswith("--service="):
            name = arg.split("=", 1)[1]
    return name


class FilterModule:
    def filters(self):
        return {
            "harness_quantity": lambda v: None if parse_quantity(v) is None else float(parse_quantity(v)),
            "harness_quantity_problems": quantity_problems,
            "harness_placement": placement,
            "harness_worker_service": worker_service,
        }
