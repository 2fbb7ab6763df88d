"""Real Kubernetes object shapes (the python client's models) for the exporter tests, and an
exposition parser that returns {(name, labels): value}."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from kubernetes.client import (
    V1Container,
    V1ContainerPort,
    V1Node,
    V1NodeStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1PodStatus,
    V1ResourceRequirements,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

T0 = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


def gpu_node(
    name: str,
    gpus: int = 1,
    replicas: int = 4,
    product: str = "NVIDIA-L4",
    instance_type: str = "g2-standard-8",
    memory_mib: int | None = 23034,
    extra_labels: dict[str, str] | None = None,
    count_label: bool = True,
) -> V1Node:
    """A node labelled the way GPU feature discovery (and the local_cluster role's kwok nodes) label it."""
    labels = {
        "kubernetes.io/hostname": name,
        "node.kubernetes.io/instance-type": instance_type,
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.replicas": str(replicas),
    }
    if count_label:
        labels["nvidia.com/gpu.count"] = str(gpus)
    if memory_mib is not None:
        labels["nvidia.com/gpu.memory"] = str(memory_mib)
    labels.update(extra_labels or {})
    capacity = {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": str(gpus * replicas)}
    return V1Node(
        metadata=V1ObjectMeta(name=name, labels=labels),
        status=V1NodeStatus(capacity=capacity, allocatable=dict(capacity)),
    )


def cpu_node(name: str) -> V1Node:
    capacity = {"cpu": "8", "memory": "32Gi", "pods": "110"}
    return V1Node(metadata=V1ObjectMeta(name=name, labels={}), status=V1NodeStatus(capacity=capacity))


def gpu_pod(
    name: str,
    node: str | None,
    gpus: int = 1,
    service: str = "stt",
    namespace: str = "model-serving",
    minutes: int = 0,
    phase: str = "Running",
    metrics_url: str | None = None,
    limits_only: bool = False,
    containers: list[V1Container] | None = None,
) -> V1Pod:
    """A pod as a Deployment would create it, requesting ``gpus`` nvidia.com/gpu, created T0 + minutes.

    ``metrics_url`` (http://IP:PORT/metrics): where its worker serves, as the pod shows it: status.podIP and
    a containerPort named ``metrics``. Without it the pod has neither (no IP yet, as before its sandbox is up).
    """
    gpu = {"nvidia.com/gpu": str(gpus)}
    resources = (
        V1ResourceRequirements(limits=gpu)
        if limits_only
        else V1ResourceRequirements(requests={"cpu": "1", **gpu}, limits=gpu)
    )
    pod_ip, ports = None, None
    if metrics_url:
        parts = urlsplit(metrics_url)
        pod_ip, ports = parts.hostname, [V1ContainerPort(name="metrics", container_port=parts.port)]
    return V1Pod(
        metadata=V1ObjectMeta(
            name=name,
            namespace=namespace,
            labels={"app.kubernetes.io/name": service},
            creation_timestamp=T0 + dt.timedelta(minutes=minutes),
        ),
        spec=V1PodSpec(
            node_name=node,
            containers=containers
            or [V1Container(name="worker", image="worker:0.1.0", resources=resources, ports=ports)],
        ),
        status=V1PodStatus(phase=phase, pod_ip=pod_ip),
    )


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def samples(scraped: dict, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(labels), value) for (n, labels), value in scraped.items() if n == name]


def start_cost_exporter(repo_root: Path, env: dict[str, str]) -> subprocess.Popen:
    """A real cost exporter process (python -m workers.cost_exporter) with exactly this environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cost_exporter"],
        cwd=repo_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
