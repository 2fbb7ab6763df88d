"""Busy ratios of the workers behind GPU pods, read from each worker's own metrics endpoint.

A worker serves ``model_worker_busy_ratio{service}`` (fraction of the last window spent on a job, 0..1) on
its container's port named ``metrics``, at the pod's IP: the endpoint Prometheus scrapes. The simulated DCGM
exporter (the real node's DaemonSet, one per node) reads it there for each GPU pod on its node.

Before, the retired pod runner published a loopback URL in the annotation ``harness.local/metrics-url`` and
nothing did for real pods, so on the real node every worker read as idle (GPU utilisation 0 under load). The
annotation is no longer read.

A pod's address is only followed into an allow list of host names and networks (loopback by default; the
DaemonSet adds its node's pod network): the exporter must not become a way to make requests elsewhere.
"""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from workers.gpu.cluster import METRICS_PORT_NAME, GpuPod

BUSY_RATIO_METRIC = "model_worker_busy_ratio"
DEFAULT_ALLOWED_HOSTS = ("127.0.0.1", "localhost", "::1")


class BusyRatioError(RuntimeError):
    pass


def parse_busy_ratio(exposition: str) -> float:
    """The busy ratio from a worker's exposition text; the largest if the worker reports several."""
    values = [
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == BUSY_RATIO_METRIC
    ]
    if not values:
        raise BusyRatioError(f"no {BUSY_RATIO_METRIC} sample in the worker's metrics")
    value = max(values)
    if not 0.0 <= value <= 1.0:
        raise BusyRatioError(f"{BUSY_RATIO_METRIC}={value} is outside [0, 1]")
    return value


def _host_allowed(host: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether ``host`` is one of the allowed names or addresses, or an address inside an allowed network."""
    if host is None:
        return False
    if host in allowed:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for entry in allowed:
        if "/" not in entry:
            continue
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def check_url(url: str, allowed_hosts: tuple[str, ...]) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BusyRatioError(f"metrics URL {url!r}: scheme must be http or https")
    if not _host_allowed(parts.hostname, allowed_hosts):
        raise BusyRatioError(f"metrics URL {url!r}: host {parts.hostname!r} is not in {list(allowed_hosts)}")
    return url


def metrics_url(pod: GpuPod) -> str:
    """The worker's /metrics at the pod's IP and its container port named ``metrics``."""
    if not pod.pod_ip:
        raise BusyRatioError("the pod has no IP yet")
    if pod.metrics_port is None:
        raise BusyRatioError(f"no containerPort named {METRICS_PORT_NAME!r} on the pod's GPU containers")
    host = f"[{pod.pod_ip}]" if ":" in pod.pod_ip else pod.pod_ip
    return f"http://{host}:{pod.metrics_port}/metrics"


@dataclass(frozen=True)
class BusyReadout:
    ratios: dict[tuple[str, str], float]
    errors: dict[tuple[str, str], str]


class BusyRatioFetcher:
    def __init__(
        self, allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS, timeout: float = 1.0, workers: int = 8
    ) -> None:
        self.allowed_hosts = allowed_hosts
        self.timeout = timeout
        self.workers = workers

    def fetch_one(self, pod: GpuPod) -> float:
        url = check_url(metrics_url(pod), self.allowed_hosts)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:  # noqa: S310 - scheme checked
                body = resp.read().decode("utf-8")
        except (urllib.error.URLError, OSError) as exc:
            raise BusyRatioError(f"GET {url}: {exc}") from exc
        return parse_busy_ratio(body)

    def fetch(self, pods: list[GpuPod]) -> BusyReadout:
        ratios: dict[tuple[str, str], float] = {}
        errors: dict[tuple[str, str], str] = {}
        if not pods:
            return BusyReadout(ratios, errors)

        def one(pod: GpuPod) -> tuple[tuple[str, str], float | None, str]:
            try:
                return (pod.namespace, pod.name), self.fetch_one(pod), ""
            except BusyRatioError as exc:
                return (pod.namespace, pod.name), None, str(exc)

        with ThreadPoolExecutor(max_workers=min(self.workers, len(pods))) as pool:
            for key, ratio, error in pool.map(one, pods):
                if ratio is None:
                    errors[key] = error
                else:
                    ratios[key] = ratio
        return BusyReadout(ratios, errors)
