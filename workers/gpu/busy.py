"""Busy ratios of the workers behind GPU pods, read from each worker's own metrics endpoint.

On the local target the pod runner starts one worker process per Running pod and records the
worker's metrics URL in the pod annotation ``harness.local/metrics-url``. The worker serves
``model_worker_busy_ratio{service}`` (fraction of the last window spent on a job, 0..1).

The annotation is written by anyone who can edit pods, so URLs are only followed to hosts in an
allow list (loopback by default): the exporter must not become a way to make requests elsewhere.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from workers.gpu.cluster import GpuPod

METRICS_URL_ANNOTATION = "harness.local/metrics-url"
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


def check_url(url: str, allowed_hosts: tuple[str, ...]) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BusyRatioError(f"metrics URL {url!r}: scheme must be http or https")
    if parts.hostname not in allowed_hosts:
        raise BusyRatioError(f"metrics URL {url!r}: host {parts.hostname!r} is not in {list(allowed_hosts)}")
    return url


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
        url = pod.annotations.get(METRICS_URL_ANNOTATION)
        if not url:
            raise BusyRatioError(f"no {METRICS_URL_ANNOTATION} annotation")
        check_url(url, self.allowed_hosts)
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
