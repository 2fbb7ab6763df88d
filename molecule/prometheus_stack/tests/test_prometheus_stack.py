"""roles/prometheus_stack on the stack: the service alerts and Alertmanager's configuration for the node's
prometheus-operator (install: objects), and what Prometheus and Alertmanager then do with them."""

from __future__ import annotations

import json
import urllib.request
import uuid

from tests.e2e import kube_checks as k
from tests.e2e import stack

# The service alerts of docs (DESIGN.md, roles/prometheus_stack/README.md).
SERVICE_ALERTS = {"HPAAtMaxReplicas", "JobsFailing", "MetricsPipelineDown", "QueueBacklogGrowing", "WorkerDown",
                  "ExporterSourceFailing"}


def loaded_alerts() -> set[str]:
    groups = stack.http_json(f"{stack.url('prometheus')}/api/v1/rules?type=alert")["data"]["groups"]
    return {r["name"] for g in groups for r in g["rules"]}


def test_prometheus_evaluates_every_service_alert():
    assert stack.wait_for("Prometheus to load the service alerts",
                          lambda: loaded_alerts() >= SERVICE_ALERTS or None, timeout=120, interval=3)


def test_kube_state_metrics_is_scraped_and_counts_every_node():
    def up():
        targets = stack.http_json(f"{stack.url('prometheus')}/api/v1/targets?state=active")["data"]["activeTargets"]
        return [t for t in targets if "kube-state-metrics" in t["labels"].get("job", "") and t["health"] == "up"]

    stack.wait_for("an up kube-state-metrics target", up, timeout=120, interval=3)
    nodes = k.core().list_node().items
    names = {n.metadata.name for n in nodes}
    assert k.real_node_name() in names and len(names) > 1, names  # the real node and the kwok GPU nodes
    counted = stack.wait_for("count(kube_node_info)", lambda: stack.prom_value("count(kube_node_info)"),
                             timeout=60, interval=2)
    assert int(counted) == len(names), f"Prometheus counts {counted} nodes, the cluster has {sorted(names)}"


def test_alertmanager_takes_an_alert_and_serves_it_back():
    am = stack.url("alertmanager")
    probe = f"MoleculeProbe{uuid.uuid4().hex[:6]}"
    body = json.dumps([{"labels": {"alertname": probe, "severity": "info", "scenario": "prometheus_stack"},
                        "annotations": {"summary": "posted by molecule/prometheus_stack"}}]).encode()
    req = urllib.request.Request(f"{am}/api/v2/alerts", data=body,  # noqa: S310 (loopback relay)
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (a loopback relay to the API server)
        assert resp.status == 200
    served = stack.wait_for(f"Alertmanager to serve {probe}", lambda: stack.http_json(
        f"{am}/api/v2/alerts?filter=alertname%3D{probe}"), timeout=30, interval=1)
    assert [a["labels"]["alertname"] for a in served] == [probe]
