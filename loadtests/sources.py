"""What the checker reads: HPAs and Deployments from the Kubernetes API, series from Prometheus, active
alerts from Alertmanager. Each read returns plain data; a failed read raises ``SourceError`` with the URL
or object and the reason, and the sampler records it in the sample instead of stopping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from loadtests.timeline import readyz_port

TIME_SCALE_ANNOTATION = "harness.local/time-scale"


class SourceError(RuntimeError):
    pass


@dataclass(frozen=True)
class HpaState:
    service: str
    min_replicas: int
    max_replicas: int
    current_replicas: int | None
    desired_replicas: int | None
    time_scale: int
    metrics: dict[str, float]
    conditions: dict[str, str]
    last_scale_time: str | None = None
    # The External metric the HPA scales on: (name, matchLabels), when it has one.
    external_metric: tuple[str, dict[str, str]] | None = None


@dataclass(frozen=True)
class DeploymentState:
    service: str
    spec_replicas: int | None
    replicas: int
    ready_replicas: int


def _quantity(value: str | None) -> float | None:
    """A Kubernetes quantity (``12``, ``2500m``, ``1.5k``) as a float."""
    if value is None:
        return None
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 1024.0, "Mi": 1024.0**2, "Gi": 1024.0**3}
    for suffix in sorted(suffixes, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * suffixes[suffix]
    return float(value)


def _metric_values(status_metrics: list[dict[str, Any]] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in status_metrics or []:
        kind = item.get("type", "")
        body = item.get(kind[:1].lower() + kind[1:]) or {}
        current = body.get("current") or {}
        if kind == "Resource":
            name = body.get("name", "resource")
            value = current.get("averageUtilization")
            value = None if value is None else float(value)
        else:
            name = (body.get("metric") or {}).get("name", kind)
            value = _quantity(current.get("averageValue") or current.get("value"))
        if value is not None:
            out[name] = value
    return out


class Kube:
    """HPAs and Deployments of the model services, read through the official client."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        from kubernetes import client, config

        self.namespace = namespace
        api_client = config.new_client_from_config(config_file=kubeconfig)
        self._api = api_client
        self.api_client = api_client  # for the relays through the API server (loadtests/apiproxy.py)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    def hpa(self, service: str) -> HpaState:
        try:
            raw = self._api.sanitize_for_serialization(
                self.autoscaling.read_namespaced_horizontal_pod_autoscaler(service, self.namespace, _request_timeout=5)
            )
        except Exception as exc:
            raise SourceError(f"HPA {self.namespace}/{service}: {_reason(exc)}") from exc
        spec, status = raw.get("spec", {}), raw.get("status", {}) or {}
        annotations = raw.get("metadata", {}).get("annotations") or {}
        try:
            scale = int(annotations.get(TIME_SCALE_ANNOTATION, "1"))
        except ValueError:
            scale = 1
        external = None
        for m in spec.get("metrics") or []:
            if m.get("type") == "External":
                metric = (m.get("external") or {}).get("metric") or {}
                external = (metric.get("name", ""), dict((metric.get("selector") or {}).get("matchLabels") or {}))
                break
        return HpaState(
            service,
            int(spec.get("minReplicas", 1)),
            int(spec["maxReplicas"]),
            status.get("currentReplicas"),
            status.get("desiredReplicas"),
            max(1, scale),
            _metric_values(status.get("currentMetrics")),
            {c["type"]: c["status"] for c in status.get("conditions") or []},
            status.get("lastScaleTime"),
            external,
        )

    # --- what the reaction timeline and the faults read and do ---------------------------------------------
    def selector(self, service: str) -> str:
        """The Deployment's pod selector as a label selector string (cached: it is immutable)."""
        cache = self.__dict__.setdefault("_selectors", {})
        if service not in cache:
            try:
                dep = self.apps.read_namespaced_deployment(service, self.namespace, _request_timeout=5)
            except Exception as exc:
                raise SourceError(f"Deployment {self.namespace}/{service}: {_reason(exc)}") from exc
            labels = dep.spec.selector.match_labels or {}
            cache[service] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return cache[service]

    def pods(self, service: str) -> list[dict[str, Any]]:
        try:
            listed = self.core.list_namespaced_pod(
                self.namespace, label_selector=self.selector(service), _request_timeout=5
            )
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"pods of {self.namespace}/{service}: {_reason(exc)}") from exc
        return self._api.sanitize_for_serialization(listed).get("items") or []

    def delete_pod(self, name: str) -> None:
        self.core.delete_namespaced_pod(name, self.namespace, _request_timeout=10)

    def readyz(self, pod: dict[str, Any]) -> bool:
        """Whether a pod's worker answers 200 on its own /readyz, asked through the API server's pod proxy
        (``pods/<name>:<port>/proxy/readyz``, the kubeconfig only, on every target) at the worker's port
        (``readyz_port``): the moment the model is loaded, not the kubelet's next probe (up to periodSeconds
        later). 503 (loading, or a job it cannot take) is False; an unanswered request raises SourceError."""
        from kubernetes.client.exceptions import ApiException

        meta = pod.get("metadata") or {}
        port = readyz_port(pod)
        if port is None:
            raise SourceError(f"pod {meta.get('name')} has no container port to ask /readyz on")
        try:
            self.core.connect_get_namespaced_pod_proxy_with_path(
                f"{meta['name']}:{port}", meta.get("namespace") or self.namespace, "readyz", _request_timeout=2
            )
        except ApiException as exc:
            if exc.status == 503:
                return False
            raise SourceError(f"/readyz of pod {meta.get('name')}: {_reason(exc)}") from exc
        except Exception as exc:
            raise SourceError(f"/readyz of pod {meta.get('name')}: {_reason(exc)}") from exc
        return True

    def hpa_max(self, service: str) -> int:
        return int(self.hpa(service).max_replicas)

    def set_hpa_max(self, service: str, value: int) -> None:
        self.autoscaling.patch_namespaced_horizontal_pod_autoscaler(
            service, self.namespace, {"spec": {"maxReplicas": int(value)}}, _request_timeout=10
        )

    def external_metric(self, name: str, labels: dict[str, str]) -> tuple[float | None, str | None]:
        """The external metrics API's value of ``name{labels}`` (the largest item) and that item's timestamp."""
        from kubernetes import client

        from loadtests.timeline import quantity

        try:
            body = client.CustomObjectsApi(self._api).list_namespaced_custom_object(
                "external.metrics.k8s.io",
                "v1beta1",
                self.namespace,
                name,
                label_selector=",".join(f"{k}={v}" for k, v in sorted(labels.items())),
                _request_timeout=5,
            )
        except Exception as exc:
            raise SourceError(f"external metric {name}{labels}: {_reason(exc)}") from exc
        items = [(quantity(i.get("value")), i.get("timestamp")) for i in body.get("items") or []]
        items = [i for i in items if i[0] is not None]
        return max(items, key=lambda i: i[0]) if items else (None, None)

    def hpa_events(self, service: str) -> list[dict[str, Any]]:
        """The HPA's SuccessfulRescale events (core/v1), as JSON."""
        try:
            listed = self.core.list_namespaced_event(
                self.namespace,
                field_selector=f"involvedObject.kind=HorizontalPodAutoscaler,involvedObject.name={service},"
                "reason=SuccessfulRescale",
                _request_timeout=5,
            )
        except Exception as exc:
            raise SourceError(f"events of HPA {self.namespace}/{service}: {_reason(exc)}") from exc
        return self._api.sanitize_for_serialization(listed).get("items") or []

    def secret_value(self, name: str, key: str) -> str:
        import base64

        try:
            secret = self.core.read_namespaced_secret(name, self.namespace, _request_timeout=5)
        except Exception as exc:
            raise SourceError(f"Secret {self.namespace}/{name}: {_reason(exc)}") from exc
        return base64.b64decode((secret.data or {})[key]).decode()

    def deployment(self, service: str) -> DeploymentState:
        try:
            dep = self.apps.read_namespaced_deployment(service, self.namespace, _request_timeout=5)
        except Exception as exc:
            raise SourceError(f"Deployment {self.namespace}/{service}: {_reason(exc)}") from exc
        status = dep.status
        return DeploymentState(service, dep.spec.replicas, status.replicas or 0, status.ready_replicas or 0)

    def read_config_map(self, namespace: str, name: str) -> dict[str, str]:
        return self.core.read_namespaced_config_map(name, namespace, _request_timeout=5).data or {}

    def patch_config_map(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.core.patch_namespaced_config_map(name, namespace, {"data": data}, _request_timeout=5)


def _reason(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status is not None:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"


class Prometheus:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=timeout)

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        try:
            resp = self.http.get(f"{self.url}/api/v1/query", params={"query": expr})
            resp.raise_for_status()
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SourceError(f"Prometheus {self.url} query {expr!r}: {exc}") from exc
        if body.get("status") != "success":
            raise SourceError(f"Prometheus query {expr!r}: {body.get('error', body)}")
        return [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]

    def matrix(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """A range-selector query's raw samples (``result`` of type matrix), evaluated at ``at``."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        try:
            resp = self.http.get(f"{self.url}/api/v1/query", params=params)
            resp.raise_for_status()
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SourceError(f"Prometheus {self.url} query {expr!r}: {exc}") from exc
        if body.get("status") != "success" or body["data"].get("resultType") != "matrix":
            raise SourceError(f"Prometheus query {expr!r}: {body.get('error', body.get('data', body))}")
        return body["data"]["result"]

    def by_label(self, expr: str, label: str) -> dict[str, float]:
        return {metric.get(label, ""): value for metric, value in self.query(expr)}

    def ready(self) -> None:
        try:
            self.http.get(f"{self.url}/-/ready").raise_for_status()
        except httpx.HTTPError as exc:
            raise SourceError(f"Prometheus at {self.url} is not ready: {exc}") from exc


class Alertmanager:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=timeout)

    def active_alerts(self) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds as active (not silenced or inhibited): labels, startsAt, fingerprint."""
        try:
            resp = self.http.get(
                f"{self.url}/api/v2/alerts",
                params={"active": "true", "silenced": "false", "inhibited": "false"},
            )
            resp.raise_for_status()
            return resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SourceError(f"Alertmanager {self.url}/api/v2/alerts: {exc}") from exc

    def ready(self) -> None:
        try:
            self.http.get(f"{self.url}/-/ready").raise_for_status()
        except httpx.HTTPError as exc:
            raise SourceError(f"Alertmanager at {self.url} is not ready: {exc}") from exc
