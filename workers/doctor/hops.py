"""One function per hop of the metric pipeline. Each returns a HopResult; none raises for a failed check.

A peer that is down, a URL that is not HTTP, a server that does not speak HTTP and an answer that is not JSON (or
not the API's shape) are failed checks too: the hop says which peer and what it got.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

import urllib3
from kubernetes import client


@dataclass
class HopResult:
    hop: str
    ok: bool
    detail: str
    data: dict = field(default_factory=dict)


@dataclass
class Pipeline:
    """What the doctor checks, and how it reaches it."""

    namespace: str
    services: list[dict]  # {name, queue}
    exporters: dict[str, str]  # name -> /metrics URL
    exporter_metrics: dict[str, list[str]]  # exporter name -> metric names it must serve
    prometheus_get: Callable[[str, dict], dict]
    alertmanager_get: Callable[[str], dict | list]
    api: client.ApiClient
    queue_metric: str = "redis_queue_depth"
    gpu_metric: str = "DCGM_FI_DEV_GPU_UTIL"


class PeerError(Exception):
    """A peer could not be asked, or its answer is not what the hop reads. The message names the peer."""


# What the kubernetes client raises when the API server cannot be reached or answers something that is not HTTP:
# urllib3's connection, protocol and retry errors, and the socket's own.
API_UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)


# A Service of the cluster, reached through the API server's service proxy with the kubeconfig's credentials only:
# service:<namespace>/<name>:<port name or number>[/path]. The same reference works on every target (no port-forward,
# no node address), and a Service with no ready endpoint fails with the API server's 503 naming it.
SERVICE_REF = re.compile(r"^service:(?P<ns>[a-z0-9-]+)/(?P<name>[a-z0-9-]+):(?P<port>[a-z0-9-]+)(?P<path>/.*)?$")


def service_proxy_path(ref: str) -> str | None:
    """The API server path of a service reference (see SERVICE_REF), or None when ``ref`` is not one."""
    m = SERVICE_REF.match(ref)
    if not m:
        return None
    return f"/api/v1/namespaces/{m['ns']}/services/{m['name']}:{m['port']}/proxy{m['path'] or ''}"


def _api_get(api: client.ApiClient, path: str, query: list | None = None, timeout: float = 10.0,
             accept: str = "application/json") -> bytes:
    """GET an API server path with the kubeconfig's credentials; an HTTP error is an ApiException.

    The kubernetes client's low-level call changed shape between releases (35.x: call_api with auth
    settings; 37.x: param_serialize then call_api), so both are handled.
    """
    params = list(query or [])
    headers = {"Accept": accept}
    if hasattr(api, "param_serialize"):
        method, url, hdrs, body, _ = api.param_serialize(
            "GET", path, query_params=params, header_params=headers, auth_settings=["BearerToken"])
        resp = api.call_api(method, url, header_params=hdrs, body=body, _request_timeout=timeout)
        resp.read()
        if resp.status >= 400:
            exc = client.ApiException(status=resp.status, reason=resp.reason)
            exc.body = resp.data
            raise exc
        return resp.data
    resp = api.call_api(path, "GET", query_params=params, header_params=headers, auth_settings=["BearerToken"],
                        _return_http_data_only=True, _preload_content=False, _request_timeout=timeout)
    return resp.data


def _status_message(exc: client.ApiException) -> str:
    """The API server's own words (a Status object's message), if its answer carried one."""
    try:
        return str(json.loads(exc.body).get("message", ""))
    except (TypeError, ValueError, AttributeError):
        return ""


def http_get(url: str, timeout: float = 5.0, api: client.ApiClient | None = None) -> bytes:
    """GET an http(s) URL, or a service reference (service:<ns>/<name>:<port>/path) through the API server."""
    proxied = service_proxy_path(url)
    if proxied is not None:
        if api is None:
            raise PeerError(f"{url}: a service reference needs the kubeconfig's API client")
        path, _, query = proxied.partition("?")
        try:
            return _api_get(api, path, urllib.parse.parse_qsl(query), timeout, accept="*/*")
        except client.ApiException as exc:
            why = _status_message(exc) or exc.reason or ""
            if exc.status == 503:
                why += " (the Service has no ready endpoint: is it scaled to 0, or its pods not Ready?)"
            raise PeerError(f"{url} answered HTTP {exc.status} through the API server's service proxy: {why}") from exc
        except API_UNREACHABLE as exc:
            raise PeerError(f"{url}: the API server does not answer ({type(exc).__name__}: {exc})") from exc
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PeerError(f"{url!r} is not an http(s) URL (http://host:port/...) nor a service reference "
                        "(service:<namespace>/<name>:<port>/path)")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (scheme checked above)
            return resp.read()
    except urllib.error.HTTPError as exc:
        raise PeerError(f"{url} answered HTTP {exc.code} {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:
        # URLError (refused, no such host, TLS) and timeouts are OSErrors; HTTPException covers a peer that is
        # not an HTTP server at all (BadStatusLine and kin).
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else f"{type(exc).__name__}: {exc}"
        raise PeerError(f"{url} does not answer over HTTP ({reason})") from exc


def get_json(url: str, timeout: float = 5.0, api: client.ApiClient | None = None):
    body = http_get(url, timeout, api)
    try:
        return json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PeerError(f"{url} answered with something that is not JSON: {body[:80]!r}") from exc


def _api_host(p: Pipeline) -> str:
    return getattr(getattr(p.api, "configuration", None), "host", "the API server")


def _api_down(p: Pipeline, exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    return f"the API server at {_api_host(p)} does not answer ({type(exc).__name__}: {reason})"


def exporters_up(p: Pipeline) -> HopResult:
    problems, seen = [], {}
    for name, url in p.exporters.items():
        try:
            text = http_get(url, api=p.api).decode("utf-8", "replace")
        except PeerError as exc:
            problems.append(f"{name}: {exc}")
            continue
        missing = [m for m in p.exporter_metrics.get(name, []) if f"\n{m}" not in "\n" + text]
        if missing:
            problems.append(f"{name} at {url} answers but does not export {missing}")
        seen[name] = url
    if problems:
        return HopResult("exporters", False, "; ".join(problems), {"up": seen})
    return HopResult("exporters", True, f"{len(seen)} exporters answer with their metrics", {"up": seen})


def _query(p: Pipeline, expr: str) -> list[dict]:
    body = p.prometheus_get("/api/v1/query", {"query": expr})
    if not isinstance(body, dict):
        raise PeerError(f"the answer to {expr!r} is not a Prometheus query answer (a JSON {type(body).__name__})")
    if body.get("status") != "success":
        raise PeerError(f"query {expr!r} failed: {body.get('error', body)}")
    result = (body.get("data") or {}).get("result") if isinstance(body.get("data"), dict) else None
    if not isinstance(result, list):
        raise PeerError(f"the answer to {expr!r} is not a Prometheus query answer (no data.result list)")
    return result


def prometheus_series(p: Pipeline) -> HopResult:
    checks = {f'up{{job="{job}"}} == 1': f"scrape job {job} is up" for job in p.exporters}
    for svc in p.services:
        checks[f'{p.queue_metric}{{queue_name="{svc["queue"]}"}}'] = f"queue depth of {svc['queue']}"
    checks[p.gpu_metric] = "GPU utilisation"
    checks["service_cost_per_hour"] = "service cost"
    found, problems = {}, []
    try:
        for expr, what in checks.items():
            result = _query(p, expr)
            if not result:
                problems.append(f"no series for {what} ({expr})")
            found[expr] = len(result)
    except PeerError as exc:
        return HopResult("prometheus", False, f"Prometheus does not answer queries: {exc}")
    if problems:
        return HopResult("prometheus", False, "; ".join(problems), {"series": found})
    return HopResult("prometheus", True, f"{len(checks)} expected series present", {"series": found})


def apiservices_available(p: Pipeline) -> HopResult:
    api = client.ApiregistrationV1Api(p.api)
    wanted = ["v1beta1.external.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io"]
    problems, status = [], {}
    for name in wanted:
        try:
            svc = api.read_api_service(name)
        except client.ApiException as exc:
            problems.append(f"APIService {name} not found ({exc.status})")
            continue
        except API_UNREACHABLE as exc:
            return HopResult("apiservice", False, _api_down(p, exc), status)
        if not isinstance(svc, client.V1APIService) or svc.kind is None:
            # The client turns a 200 answer that is not JSON into an empty object instead of failing.
            return HopResult("apiservice", False, f"{_api_host(p)} answered {name} with something that is not JSON "
                             "or not an APIService: is the kubeconfig's server the API server?", status)
        cond = next((c for c in ((svc.status and svc.status.conditions) or []) if c.type == "Available"), None)
        status[name] = cond.status if cond else "Unknown"
        if not cond or cond.status != "True":
            why = f"{cond.reason}: {cond.message}" if cond else "no Available condition"
            problems.append(f"APIService {name} is not Available ({why})")
    if problems:
        return HopResult("apiservice", False, "; ".join(problems), status)
    return HopResult("apiservice", True, "external and custom metrics APIs Available", status)


def _raw_get(p: Pipeline, path: str, query: dict | None = None) -> dict:
    """GET an aggregated-API path with the kubeconfig's credentials (no typed client exists for these)."""
    data = _api_get(p.api, path, list((query or {}).items()))
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise PeerError(f"{_api_host(p)}{path} answered with something that is not JSON: {data[:80]!r}") from exc
    if not isinstance(body, dict):
        raise PeerError(f"{_api_host(p)}{path} answered a JSON {type(body).__name__}, not a metric value list")
    return body


def adapter_serves(p: Pipeline) -> HopResult:
    problems, values = [], {}
    for svc in p.services:
        path = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{p.namespace}/{p.queue_metric}"
        try:
            items = _raw_get(p, path, {"labelSelector": f"queue_name={svc['queue']}"}).get("items", [])
        except client.ApiException as exc:
            problems.append(f"adapter does not serve {p.queue_metric} for queue {svc['queue']}: "
                            f"{exc.status} {exc.reason}")
            continue
        except API_UNREACHABLE as exc:
            return HopResult("adapter", False, _api_down(p, exc), values)
        except PeerError as exc:
            problems.append(str(exc))
            continue
        if not items:
            problems.append(f"adapter lists no {p.queue_metric} value for queue {svc['queue']}")
        values[f"{p.queue_metric}/{svc['queue']}"] = [i.get("value") for i in items]
    try:
        path = f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{p.namespace}/pods/*/{p.gpu_metric}"
        items = _raw_get(p, path).get("items", [])
        values[p.gpu_metric] = len(items)
        if not items:
            problems.append(f"adapter lists no pod {p.gpu_metric} in namespace {p.namespace}")
    except client.ApiException as exc:
        problems.append(f"adapter does not serve pod {p.gpu_metric}: {exc.status} {exc.reason}")
    except API_UNREACHABLE as exc:
        return HopResult("adapter", False, _api_down(p, exc), values)
    except PeerError as exc:
        problems.append(str(exc))
    if problems:
        return HopResult("adapter", False, "; ".join(problems), values)
    return HopResult("adapter", True, "queue depth and pod GPU utilisation served", values)


def hpas_active(p: Pipeline) -> HopResult:
    api = client.AutoscalingV2Api(p.api)
    problems, state = [], {}
    for svc in p.services:
        try:
            hpa = api.read_namespaced_horizontal_pod_autoscaler(svc["name"], p.namespace)
        except client.ApiException as exc:
            problems.append(f"HPA {svc['name']} not found ({exc.status})")
            continue
        except API_UNREACHABLE as exc:
            return HopResult("hpa", False, _api_down(p, exc), state)
        if hpa.status is None or hpa.spec is None:
            problems.append(f"{_api_host(p)} answered HPA {svc['name']} with something that is not an HPA")
            continue
        conds = {c.type: c for c in (hpa.status.conditions or [])}
        active = conds.get("ScalingActive")
        current = hpa.status.current_metrics or []
        expected = len(hpa.spec.metrics or [])
        state[svc["name"]] = {
            "current_replicas": hpa.status.current_replicas,
            "desired_replicas": hpa.status.desired_replicas,
            "metrics_with_values": len(current),
            "metrics_in_spec": expected,
            "scaling_active": active.status if active else "Unknown",
        }
        if not active or active.status != "True":
            why = f"{active.reason}: {active.message}" if active else "no ScalingActive condition yet"
            problems.append(f"HPA {svc['name']} is not ScalingActive ({why})")
        elif len(current) < expected:
            problems.append(f"HPA {svc['name']} has values for {len(current)} of {expected} metrics")
    if problems:
        return HopResult("hpa", False, "; ".join(problems), state)
    return HopResult("hpa", True, "every HPA reads all its metrics and is ScalingActive", state)


def alertmanager_reachable(p: Pipeline) -> HopResult:
    try:
        status = p.alertmanager_get("/api/v2/status")
    except PeerError as exc:
        return HopResult("alertmanager", False, f"Alertmanager does not answer: {exc}")
    cluster = status.get("cluster", {}).get("status") if isinstance(status, dict) else None
    return HopResult("alertmanager", True, "Alertmanager answers", {"cluster_status": cluster})


HOPS = {
    "exporters": exporters_up,
    "prometheus": prometheus_series,
    "apiservice": apiservices_available,
    "adapter": adapter_serves,
    "hpa": hpas_active,
    "alertmanager": alertmanager_reachable,
}


def _run_hop(name: str, hop: Callable[[Pipeline], HopResult], p: Pipeline) -> HopResult:
    try:
        return hop(p)
    except Exception as exc:  # the doctor's contract: a hop that breaks is reported by name, never raised
        return HopResult(name, False, f"the {name} check could not run: {type(exc).__name__}: {exc}")


def run_all(p: Pipeline) -> dict:
    """Run every hop in pipeline order. The first failed hop is named; later hops still run and report."""
    results = [_run_hop(name, hop, p) for name, hop in HOPS.items()]
    failed = next((r for r in results if not r.ok), None)
    return {
        "ok": failed is None,
        "failed_hop": failed.hop if failed else None,
        "reason": failed.detail if failed else None,
        "hops": [r.__dict__ for r in results],
    }


def json_getter(base: str, api: client.ApiClient | None = None) -> Callable:
    """GET <base><path>?<params> as JSON; base is an http(s) URL or a service reference."""
    def get(path: str, params: dict | None = None):
        url = base.rstrip("/") + path + ("?" + urllib.parse.urlencode(params) if params else "")
        return get_json(url, api=api)

    return get
