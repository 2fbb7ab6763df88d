"""roles/prometheus_adapter on the stack: the metrics APIs it registers, and a queue's depth travelling from Redis
through the queue exporter, Prometheus and the adapter to the aggregated external metrics API, as an HPA reads it."""

from __future__ import annotations

from loadtests import inventory as inventory_facts
from tests.e2e import kube_checks as k
from tests.e2e import stack

# A queue the queue exporter exports and no worker consumes (the inventory's extra queues, for the policy self-test).
FIXTURE_QUEUE = inventory_facts.facts()["model_services_queue_exporter_extra_queues"][0].split(":")[0]
DEPTH = 7


def apiservices() -> dict[str, dict]:
    items = k.custom().list_cluster_custom_object("apiregistration.k8s.io", "v1", "apiservices")["items"]
    return {i["metadata"]["name"]: i for i in items}


def available(item: dict) -> bool:
    return any(c["type"] == "Available" and c["status"] == "True" for c in item.get("status", {}).get("conditions", []))


def test_the_adapter_serves_the_external_and_custom_metrics_apis_and_they_are_available():
    apis = apiservices()
    adapter = sorted(n for n, i in apis.items()
                     if i["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "prometheus-adapter")
    assert {"v1beta1.external.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io"} <= set(
        adapter), adapter
    # The HPAs' Resource (CPU) metric: metrics.k8s.io, from metrics-server or the adapter, whichever the target has.
    for name in [*adapter, "v1beta1.metrics.k8s.io"]:
        assert available(apis[name]), (name, apis[name].get("status"))


def depth() -> float | None:
    body = k.raw_get(f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{k.namespace()}/redis_queue_depth"
                     f"?labelSelector=queue_name%3D{FIXTURE_QUEUE}")
    values = [float(i["value"]) for i in body.get("items", [])]
    return max(values) if values else None


def test_a_queue_depth_in_redis_reaches_the_external_metrics_api():
    key = f"bull:{FIXTURE_QUEUE}:wait"
    cmd = 'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning "$@"'
    rc, out = k.exec_in("redis-0", ["sh", "-c", cmd, "redis-cli", "rpush", key,
                                    *[f"molecule-{i}" for i in range(DEPTH)]], container="redis")
    assert rc == 0, out
    try:
        # Redis -> exporter (at scrape) -> Prometheus -> the adapter's relist (fast profile: every few seconds).
        got = stack.wait_for(f"redis_queue_depth{{queue_name={FIXTURE_QUEUE}}} = {DEPTH}",
                             lambda: depth() == DEPTH, timeout=120, interval=2)
        assert got
        listed = k.raw_get("/apis/external.metrics.k8s.io/v1beta1")["resources"]
        assert "redis_queue_depth" in [r["name"] for r in listed]
    finally:
        k.exec_in("redis-0", ["sh", "-c", cmd, "redis-cli", "del", key], container="redis")
    stack.wait_for(f"{FIXTURE_QUEUE}'s depth back at 0", lambda: depth() == 0, timeout=120, interval=2)
