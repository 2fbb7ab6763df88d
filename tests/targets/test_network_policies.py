"""Every scrape a ServiceMonitor asks Prometheus for is allowed by the NetworkPolicies the roles render, on every
target (where a NetworkPolicy engine enforces them, a blocked scrape is a dead metric: the queue depth the HPAs
scale on, the cost series the budget alerts read). The policies are evaluated here with the NetworkPolicy API's
semantics (a pod selected by any Ingress policy admits only what some rule of those policies allows); the
apiserver validates the same objects in test_dry_run.py."""

import pytest
from conftest import REPO, TARGETS

# kube-prometheus-stack's Prometheus pods (release kube-prometheus-stack, roles/prometheus_stack), in the
# monitoring namespace the inventory names (prometheus_stack_release_namespace).
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus", "prometheus": "kube-prometheus-stack-prometheus"}


def selects(selector, labels):
    """A LabelSelector applied to a label set; an empty selector selects everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def _policy_types(policy):
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))


def ingress_allowed(policies, namespace, pod_labels, named_ports, port, source_namespace, source_ns_labels,
                    source_pod_labels):
    """Whether a TCP connection from the source pod to `port` of the pod is admitted."""
    isolating = [p for p in policies if p["metadata"]["namespace"] == namespace
                 and selects(p["spec"].get("podSelector"), pod_labels) and "Ingress" in _policy_types(p)]
    if not isolating:
        return True
    for policy in isolating:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from") or []
            from_ok = not peers or any(_peer_matches(peer, namespace, source_namespace, source_ns_labels,
                                                     source_pod_labels) for peer in peers)
            ports = rule.get("ports") or []
            port_ok = not ports or any(p.get("protocol", "TCP") == "TCP" and
                                       (named_ports.get(p["port"]) if isinstance(p["port"], str) else p["port"]) == port
                                       for p in ports if "port" in p) or any("port" not in p for p in ports)
            if from_ok and port_ok:
                return True
    return False


def _peer_matches(peer, policy_namespace, source_namespace, source_ns_labels, source_pod_labels):
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], source_ns_labels):
            return False
    elif source_namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector"), source_pod_labels) if "podSelector" in peer else True


def scrape_targets(objects):
    """(ServiceMonitor, pod labels, pod's named ports, port number) for every workload a ServiceMonitor scrapes."""
    services = [o for o in objects if o["kind"] == "Service"]
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]
    for sm in (o for o in objects if o["kind"] == "ServiceMonitor"):
        ns = sm["metadata"]["namespace"]
        selected = [s for s in services if s["metadata"]["namespace"] == ns
                    and selects(sm["spec"]["selector"], s["metadata"].get("labels") or {})]
        assert selected, f"ServiceMonitor {ns}/{sm['metadata']['name']} selects no rendered Service"
        for svc in selected:
            pods = [w for w in workloads if w["metadata"]["namespace"] == ns
                    and selects({"matchLabels": svc["spec"]["selector"]}, w["spec"]["template"]["metadata"]["labels"])]
            assert pods, f"Service {ns}/{svc['metadata']['name']} selects no rendered workload"
            for endpoint in sm["spec"]["endpoints"]:
                svc_port = next(p for p in svc["spec"]["ports"] if p.get("name") == endpoint["port"])
                for w in pods:
                    template = w["spec"]["template"]
                    named = {p["name"]: p["containerPort"] for c in template["spec"]["containers"]
                             for p in c.get("ports") or [] if "name" in p}
                    target = svc_port.get("targetPort", svc_port["port"])
                    number = named[target] if isinstance(target, str) else target
                    yield sm, w, template["metadata"]["labels"], named, number


@pytest.mark.parametrize("target", TARGETS)
def test_every_service_monitor_scrape_is_allowed(rendered, target):
    objects = rendered[target]["objects"]
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    monitoring = rendered[target]["monitoring_namespace"]
    checked, blocked = [], []
    for sm, workload, labels, named, port in scrape_targets(objects):
        ident = f"ServiceMonitor {sm['metadata']['name']} -> {workload['kind']}/{workload['metadata']['name']}:{port}"
        checked.append(ident)
        if not ingress_allowed(policies, workload["metadata"]["namespace"], labels, named, port, monitoring,
                               {"kubernetes.io/metadata.name": monitoring}, PROMETHEUS_POD_LABELS):
            blocked.append(ident)
    print(f"\n{target}: scrapes checked against {len(policies)} NetworkPolicies: {checked}")
    names = {sm["metadata"]["name"] for sm in objects if sm["kind"] == "ServiceMonitor"}
    assert {"queue-exporter", "cost-exporter", "gateway"} <= names
    assert not blocked, f"{target}: NetworkPolicies block Prometheus ({monitoring}) from: {blocked}"


@pytest.mark.parametrize("target", TARGETS)
def test_policies_still_isolate_the_workers_and_redis(rendered, target):
    """The check above can fail: a pod outside the monitoring namespace may not scrape a worker, and Redis
    admits only the harness's own pods."""
    objects = rendered[target]["objects"]
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    stranger = ("default", {"kubernetes.io/metadata.name": "default"}, {"app": "curl"})
    some_scrape = False
    for _sm, workload, labels, named, port in scrape_targets(objects):
        if workload["metadata"]["labels"].get("app.kubernetes.io/component") == "model-worker":
            some_scrape = True
            assert not ingress_allowed(policies, workload["metadata"]["namespace"], labels, named, port, *stranger)
    assert some_scrape
    redis = next(o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "redis")
    ns = redis["metadata"]["namespace"]
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert not ingress_allowed(policies, ns, redis_labels, {}, 6379, *stranger)
    assert not ingress_allowed(policies, ns, redis_labels, {}, 6379, ns, {"kubernetes.io/metadata.name": ns},
                               {"app": "curl"})
    assert ingress_allowed(policies, ns, redis_labels, {}, 6379, ns, {"kubernetes.io/metadata.name": ns},
                           {"app.kubernetes.io/name": "stt", "app.kubernetes.io/part-of": "gpu-serving-harness"})


def test_gke_cluster_is_created_with_an_enforcing_dataplane():
    """GKE enforces NetworkPolicies only with Dataplane V2 (or the Calico add-on), chosen when the cluster is
    created. The cluster module's call is not rendered by the role (it talks to Google directly), so its
    arguments are read from the task file."""
    import yaml

    tasks = yaml.safe_load((REPO / "roles/gke_cluster/tasks/install.yml").read_text())
    args = next(t for t in tasks if "google.cloud.gcp_container_cluster" in t)["google.cloud.gcp_container_cluster"]
    assert "'datapath_provider': 'ADVANCED_DATAPATH'" in args.get("network_config", "")
    assert "gke_cluster_dataplane_v2" in args["network_config"]
    assert args.get("ip_allocation_policy") == {"use_ip_aliases": True}, "Dataplane V2 needs a VPC-native cluster"
    defaults = yaml.safe_load((REPO / "roles/gke_cluster/defaults/main.yml").read_text())
    assert defaults["gke_cluster_dataplane_v2"] is True
