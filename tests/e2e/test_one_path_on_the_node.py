"""The one deployment path on the real node, checked on the stack site.yml brought up (the local inventory's default:
the service roles' cluster manifests, namespace model-serving, every pod on the node). Nothing is deployed here.

What the service roles deployed runs on the node from the project's images: every workload available, every pod on
the real node, every container image the inventory's (harness_images, in harness_image_registry); Redis and the cost
ledger on local volumes of the node's default StorageClass; every gateway replica accepts the API key of the Secret
the role generated (a wrong key is a 401); a TTS job is synthesised by Piper and its audio transcribed back by
faster-whisper; kube-router enforces the project's NetworkPolicies on the real pods; Prometheus scrapes the stack
through its ServiceMonitors, counts the finished jobs by service, holds the cost exporter's series with the service's
own labels, the HPAs' series from kube-state-metrics and the roles' rule groups; Alertmanager has the role's route to
the inventory's webhook; the load-test checker reads Redis through the API server, also after its pod was replaced.

Expectations come from the inventory (the service table, group_vars, asked of Ansible where they are expressions) and
the roles' defaults and templates, never from the objects checked. (Moved here from tests/real_node, which ran the
same roles into a namespace of its own on a second cluster; the node-level checks stay there.)
"""

from __future__ import annotations

import json
import re
import time
from functools import cache
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from loadtests import inventory as inventory_facts
from loadtests.apiproxy import PodPortRelay, cluster_service, with_address
from loadtests.queueaudit import RedisQueues
from tests.e2e import kube_checks as k
from tests.e2e import stack

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SERVICES = stack.SERVICES
ROLES = stack.ROOT / "roles"
# The workloads the roles' cluster templates name (model_services: platform-cluster.yml.j2, services.yml.j2;
# queue: redis-cluster.yml.j2; cost_tracking: cost-exporter-cluster.yml.j2).
DEPLOYMENTS = set(SERVICES) | {"gateway", "queue-exporter", "cost-exporter"}
STATEFULSETS = {"redis"}
# The claims of Redis (volumeClaimTemplates `data` of StatefulSet redis) and of the cost ledger.
CLAIMS = ("data-redis-0", "cost-exporter-state")
# The ServiceMonitors the roles render (model_services: servicemonitors.yml.j2; cost_tracking's).
MONITORS = {f"model-worker-{name}" for name in SERVICES} | {"gateway", "queue-exporter", "cost-exporter"}
# Run inside a pod of the stack's own images (Python): does a TCP connection to host:port open within 3 s?
CONNECTS = ("import socket, sys\n"
            "try:\n"
            "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()\n"
            "    print('connected')\n"
            "except OSError as exc:\n"
            "    print('refused', exc)\n")
OUTSIDE = "one-path-outside"


@cache
def inventory() -> dict[str, Any]:
    """The inventory's values as a play sees them (expressions evaluated), and the roles' defaults it keeps."""
    values = inventory_facts.ansible_value(
        '{"registry": harness_image_registry, "images": harness_images, "state_dir": harness_state_dir,'
        ' "webhooks": prometheus_stack_alert_webhooks | default([]) | map(attribute="url") | list}',
        stack.INVENTORY)
    plain = inventory_facts.facts(stack.INVENTORY)
    for role in ("real_node", "model_services", "queue", "cost_tracking", "prometheus_adapter"):
        values.update({key: plain.get(key, value) for key, value in k.defaults(role).items()
                       if key not in values})
    values["real_node_dir"] = str(values["real_node_dir"]).replace("{{ harness_state_dir }}", values["state_dir"])
    assert "{{" not in values["real_node_dir"], values["real_node_dir"]
    return values


@pytest.fixture(scope="module", autouse=True)
def the_stack():
    stack.require_stack()


def _not_terminating(pods):
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def _pod_state(pod) -> str:
    """A pod's phase, node and why a container is not ready (waiting or terminated reason), for a failure message."""
    why = [f"{c.name}: {(c.state.waiting or c.state.terminated).reason}" if (c.state.waiting or c.state.terminated)
           else f"{c.name}: running, ready={c.ready}" for c in pod.status.container_statuses or []]
    return (f"{pod.metadata.name} {pod.status.phase} {pod.status.reason or ''} on {pod.spec.node_name}"
            f" [{'; '.join(why)}]")


def _at_rest() -> list | stack.NotYet:
    """Every Deployment and StatefulSet available at its wanted count, and every pod Ready on the real node (or,
    falsy, what is not)."""
    ns = k.namespace()
    deployments = {d.metadata.name: d for d in k.apps().list_namespaced_deployment(ns).items}
    sets = {s.metadata.name: s for s in k.apps().list_namespaced_stateful_set(ns).items}
    assert set(deployments) >= DEPLOYMENTS and set(sets) >= STATEFULSETS, (sorted(deployments), sorted(sets))
    short = [f"{n} {d.status.available_replicas or 0}/{d.spec.replicas} available" for n, d in deployments.items()
             if (d.status.available_replicas or 0) < (d.spec.replicas or 0)]
    short += [f"{n} {s.status.ready_replicas or 0}/{s.spec.replicas} ready" for n, s in sets.items()
              if (s.status.ready_replicas or 0) < (s.spec.replicas or 0)]
    pods = _not_terminating(k.core().list_namespaced_pod(ns).items)
    elsewhere = [_pod_state(p) for p in pods if p.spec.node_name != k.real_node_name() or not k.ready(p)]
    if short or elsewhere:
        return stack.NotYet(f"short: {short}; pods not Ready on {k.real_node_name()}: {elsewhere}")
    return pods


def test_every_workload_is_available_with_every_pod_on_the_real_node():
    pods = stack.wait_for("every workload available and every pod Ready on the real node", _at_rest, timeout=240,
                          interval=3)
    names = {p.metadata.labels.get("app.kubernetes.io/name") for p in pods}
    assert names >= DEPLOYMENTS | STATEFULSETS, sorted(names)
    gateways = [p for p in pods if p.metadata.labels.get("app.kubernetes.io/name") == "gateway"]
    assert len(gateways) == int(inventory()["model_services_gateway_replicas"]), [p.metadata.name for p in gateways]


def test_every_container_is_the_inventorys_image_from_the_local_registry():
    inv = inventory()
    wanted = set(inv["images"].values())
    adapter = k.pods("app.kubernetes.io/name=prometheus-adapter", inv["prometheus_adapter_release_namespace"])
    pods = _not_terminating(k.core().list_namespaced_pod(k.namespace()).items) + _not_terminating(adapter)
    assert adapter, "no prometheus-adapter pod"
    images = {(p.metadata.name, c.name): c.image for p in pods
              for c in (p.spec.init_containers or []) + p.spec.containers}
    foreign = {where: image for where, image in images.items()
               if image not in wanted or not image.startswith(f"{inv['registry']}/")}
    assert not foreign, f"not the inventory's images from {inv['registry']}: {foreign}"
    # And the node pulled each from there (a running container's image ID names the registry's digest).
    for p in pods:
        for status in p.status.container_statuses or []:
            assert status.image_id.split("@")[0].removeprefix("docker-pullable://").startswith(
                inv["registry"]), (p.metadata.name, status.image_id)


def test_redis_and_the_cost_ledger_are_bound_to_the_nodes_local_volumes_by_the_default_storage_class():
    inv = inventory()
    cls = client.StorageV1Api(stack.kube()).read_storage_class(inv["real_node_storage_class"])
    annotations = cls.metadata.annotations or {}
    assert annotations.get("storageclass.kubernetes.io/is-default-class") == "true", annotations
    # The roles name no class (queue_redis_storage_class, cost_tracking_state_storage_class: ""): the default's.
    assert (inv["queue_redis_storage_class"], inv["cost_tracking_state_storage_class"]) == ("", ""), inv
    for claim in CLAIMS:
        pvc = k.core().read_namespaced_persistent_volume_claim(claim, k.namespace())
        assert pvc.status.phase == "Bound" and pvc.spec.storage_class_name == inv["real_node_storage_class"], (
            claim, pvc.status.phase, pvc.spec.storage_class_name)
        pv = k.core().read_persistent_volume(pvc.spec.volume_name)
        assert pv.spec.local and pv.spec.local.path.startswith(f"{inv['real_node_dir']}/volumes/"), (claim, pv.spec)


def through_apiserver(method: str, target: str, path: str, headers: dict[str, str] | None = None
                      ) -> tuple[int, bytes]:
    """A request to a Service (``services/<name>:<port>``) or pod (``pods/<name>:<port>``) of the stack through the
    API server's proxy, with the kubeconfig only; (status, body)."""
    try:
        resp, status, _ = stack.kube().call_api(
            f"/api/v1/namespaces/{k.namespace()}/{target}/proxy{path}", method, header_params=headers or {},
            auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=False,
            _request_timeout=30)
        return status, resp.data
    except ApiException as exc:
        return exc.status, exc.body or b""


def _http_port(pod, name: str = "http") -> int:
    return next(p.container_port for c in pod.spec.containers for p in c.ports or [] if p.name == name)


def test_every_gateway_replica_accepts_the_secrets_api_key_and_a_wrong_key_is_refused():
    key = k.api_key()
    assert key.startswith("mgw_") and len(key) >= 40  # what the role generates (workers/gateway/keys.py)
    gateways = [p for p in k.pods("app.kubernetes.io/name=gateway") if k.ready(p)]
    assert len(gateways) == int(inventory()["model_services_gateway_replicas"]), [p.metadata.name for p in gateways]
    for pod in gateways:  # each replica, through the pod proxy: the key store is Redis, not the replica's disk
        status, body = through_apiserver("GET", f"pods/{pod.metadata.name}:{_http_port(pod)}", "/v1/jobs/stt-0",
                                         {"X-API-Key": key})
        assert status == 404 and b"job_not_found" in body, (pod.metadata.name, status, body[:300])
    status, body = through_apiserver("GET", "services/gateway:http", "/v1/jobs/stt-0", {"X-API-Key": "mgw_wrong"})
    assert status == 401, (status, body[:300])


def completed_by_series() -> dict[tuple[str, str], float]:
    q = f'model_worker_jobs_total{{namespace="{k.namespace()}",status="completed"}}'
    return {(r["metric"].get("service", ""), r["metric"].get("pod", "")): float(r["value"][1])
            for r in stack.prom_query(q)}


@pytest.fixture(scope="module")
def jobs():
    """A TTS job and the STT job of its audio, through the gateway's Service (the API server's proxy); and the
    finished-job counters of each worker series before them."""
    assert {"stt", "tts"} <= set(SERVICES), f"the local inventory enables {sorted(SERVICES)}: this needs stt and tts"
    before = completed_by_series()
    key = k.api_key()
    gateway = stack.url("gateway")
    with httpx.Client(base_url=gateway, headers={"X-API-Key": key}, timeout=60) as http:
        def submit(path: str, **kwargs) -> str:
            for _ in range(60):
                r = http.post(path, **kwargs)
                if r.status_code != 429:  # the gateway's rate limit per key: wait as it says
                    break
                time.sleep(float(r.headers.get("Retry-After", "1")))
            assert r.status_code == 202, (r.status_code, r.text[:300])
            return r.json()["id"]

        def finished(job_id: str) -> dict:
            def done():
                r = http.get(f"/v1/jobs/{job_id}")
                assert r.status_code == 200, (r.status_code, r.text[:300])
                view = r.json()
                assert view["status"] != "failed", view
                return view if view["status"] == "completed" else None
            return stack.wait_for(f"job {job_id} completed", done, timeout=300, interval=2)

        tts = finished(submit("/v1/jobs/tts", json={"text": "Hello world. This is a test of the speech pipeline.",
                                                     "voice": "default"}))
        wav = http.get(f"/v1/jobs/{tts['id']}/audio")
        assert wav.status_code == 200 and wav.content[:4] == b"RIFF", (wav.status_code, wav.content[:64])
        stt = finished(submit("/v1/jobs/stt", files={"file": ("tts.wav", wav.content, "audio/wav")}))
    return {"before": before, "tts": tts, "stt": stt}


def test_a_tts_jobs_audio_is_transcribed_back_by_stt(jobs):
    text = json.dumps(jobs["stt"]["result"]).lower()
    assert "hello" in text and "test" in text, jobs["stt"]["result"]  # Piper's real voice, whisper's real model


def test_prometheus_scrapes_the_stack_through_its_service_monitors():
    ns = k.namespace()
    listed = k.custom().list_namespaced_custom_object("monitoring.coreos.com", "v1", ns, "servicemonitors")["items"]
    assert {m["metadata"]["name"] for m in listed} >= MONITORS, [m["metadata"]["name"] for m in listed]
    wanted = {f"serviceMonitor/{ns}/{name}/0" for name in MONITORS}

    def scraped():
        active = stack.http_json(f"{stack.url('prometheus')}/api/v1/targets?state=active")["data"]["activeTargets"]
        health: dict[str, set[str]] = {}
        for t in active:
            if t["scrapePool"] in wanted:
                health.setdefault(t["scrapePool"], set()).add(t["health"])
        return health if set(health) == wanted and all(h == {"up"} for h in health.values()) else None

    stack.wait_for(f"every target of {sorted(wanted)} up", scraped, timeout=120, interval=3)


def test_prometheus_counts_the_finished_jobs_by_service(jobs):
    """Each service's completed counter rose by at least the one job this module ran on it (other tests may have
    run jobs before: the rise is counted per worker series, from the values before the jobs)."""
    before = jobs["before"]

    def risen():
        rise = {name: 0.0 for name in ("stt", "tts")}
        for (service, pod), value in completed_by_series().items():
            if service in rise:
                rise[service] += max(0.0, value - before.get((service, pod), 0.0))
        return rise if all(v >= 1 for v in rise.values()) else None

    stack.wait_for("each service's finished job counted in Prometheus", risen, timeout=90, interval=3)


def test_the_cost_series_keep_the_services_own_labels():
    q = f'service_cost_per_hour{{namespace="{k.namespace()}"}}'
    costs = stack.wait_for("the cost exporter's service costs in Prometheus", lambda: stack.prom_query(q),
                           timeout=90, interval=3)
    assert {r["metric"].get("service") for r in costs} == set(SERVICES), [r["metric"] for r in costs]
    assert all(float(r["value"][1]) > 0 and r["metric"]["job"] == "cost-exporter" for r in costs), costs
    assert not [key for r in costs for key in r["metric"] if key.startswith("exported_")], costs


def test_kube_state_metrics_exports_each_hpa_with_the_tables_maximum():
    """HPAAtMaxReplicas compares kube-state-metrics' two HPA series (roles/prometheus_stack's service alerts)."""
    ns = k.namespace()

    def series():
        found = {}
        for name in SERVICES:
            for metric in ("kube_horizontalpodautoscaler_spec_max_replicas",
                           "kube_horizontalpodautoscaler_status_current_replicas"):
                result = stack.prom_query(f'{metric}{{namespace="{ns}",horizontalpodautoscaler="{name}"}}')
                if len(result) != 1:
                    return None
                found[(name, metric)] = float(result[0]["value"][1])
        return found

    got = stack.wait_for("each HPA's series from kube-state-metrics", series, timeout=120, interval=3)
    for name, svc in SERVICES.items():
        assert got[(name, "kube_horizontalpodautoscaler_spec_max_replicas")] == svc["hpa"]["max"], (name, got)


def rule_groups(template: str) -> set[str]:
    return set(re.findall(r"^  - name: ([\w-]+)$", (ROLES / template).read_text(), re.M))


def test_prometheus_loads_the_roles_rule_groups():
    expected = (rule_groups("prometheus_stack/templates/service-alerts.rules.yml.j2")
                | rule_groups("cost_tracking/templates/cost-alerts.rules.yml.j2"))
    assert len(expected) >= 3, expected

    def loaded():
        groups = {g["name"] for g in stack.http_json(f"{stack.url('prometheus')}/api/v1/rules")["data"]["groups"]}
        return groups if expected <= groups else None

    stack.wait_for(f"Prometheus to load the rule groups {sorted(expected)}", loaded, timeout=120, interval=3)


def test_alertmanager_routes_to_the_inventorys_webhooks():
    hooks = inventory()["webhooks"]
    assert hooks, "the local inventory lists no webhook (prometheus_stack_alert_webhooks)"

    def configured():
        status = stack.http_json(f"{stack.url('alertmanager')}/api/v2/status")
        config = yaml.safe_load(status["config"]["original"])
        urls = [w["url"] for r in config.get("receivers", []) for w in r.get("webhook_configs") or []]
        # The role's template: route to `notify`, which holds the inventory's webhooks.
        return config if config["route"]["receiver"] == "notify" and urls == hooks else None

    stack.wait_for(f"Alertmanager's route to {hooks}", configured, timeout=120, interval=3)


def test_the_doctor_and_the_load_test_reach_the_stack_through_the_api_server():
    """verify.yml's doctor and loadtest.yml take the inventory's endpoints (tests/e2e/test_doctor.py runs the doctor
    on them): in the cluster, every one is a Service through the API server's proxy, the kubeconfig only."""
    endpoints = stack.target()["endpoints"]
    refs = {name: endpoints[name] for name in ("gateway", "prometheus", "alertmanager")}
    refs.update({f"exporter {name}": ref for name, ref in endpoints["exporters"].items()})
    assert all(str(ref).startswith("service:") for ref in refs.values()), refs
    for name in endpoints["exporters"]:
        assert "# HELP" in k.exporter_text(name), name


def _connects(pod: str, host: str, port: int, ns: str | None = None) -> bool:
    rc, out = k.exec_in(pod, ["python", "-c", CONNECTS, host, str(port)], ns=ns, timeout=30)
    assert rc is not None, out
    return "connected" in out


@pytest.fixture
def outsider():
    """A pod of the gateway's image in a namespace of its own (created here, deleted after), on the real node."""
    core = k.core()

    def gone():
        try:
            core.read_namespace(OUTSIDE)
        except ApiException as exc:
            return exc.status == 404
        return False

    if not gone():  # an earlier run's, still terminating
        core.delete_namespace(OUTSIDE)
        stack.wait_for(f"namespace {OUTSIDE} from an earlier run to go", gone, timeout=180, interval=3)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OUTSIDE}})
    try:
        template = k.apps().read_namespaced_deployment("gateway", k.namespace()).spec.template.spec
        spec = stack.kube().sanitize_for_serialization(template)
        container = {key: value for key, value in spec["containers"][0].items()
                     if key not in ("env", "readinessProbe", "livenessProbe", "ports")}
        spec["containers"] = [{**container, "name": "outsider", "command": ["sleep", "3600"]}]
        spec["volumes"] = [{"name": v["name"], "emptyDir": {}} for v in spec.get("volumes") or []]
        spec["terminationGracePeriodSeconds"] = 1
        core.create_namespaced_pod(OUTSIDE, {"apiVersion": "v1", "kind": "Pod",
                                             "metadata": {"name": "outsider"}, "spec": spec})
        stack.wait_for("the outsider pod Ready", lambda: k.ready(core.read_namespaced_pod("outsider", OUTSIDE)),
                       timeout=120, interval=2)
        yield "outsider"
    finally:
        core.delete_namespace(OUTSIDE)


def test_the_projects_network_policies_are_enforced_on_the_real_pods(outsider):
    """A worker reaches Redis (by the Secret's Service name) and not the gateway; a pod of another namespace reaches
    the gateway's HTTP port, neither a worker's metrics port nor Redis (model_services' NetworkPolicies)."""
    pods = {p.metadata.labels.get("app.kubernetes.io/name"): p for p in k.pods("app.kubernetes.io/part-of")
            if k.ready(p)}
    pods["redis"] = k.core().read_namespaced_pod("redis-0", k.namespace())
    worker = next(name for name in ("stt", "tts") if name in pods)
    _, redis_host, redis_port = cluster_service(k.secret_value(inventory()["queue_secret_name"], "url"))
    service_host = f"{redis_host}.{k.namespace()}.svc"
    gateway_ip, gateway_port = pods["gateway"].status.pod_ip, _http_port(pods["gateway"])
    metrics_port = int(inventory()["model_services_metrics_port"])

    assert _connects(pods[worker].metadata.name, service_host, redis_port), "a worker cannot resolve or reach Redis"
    assert not _connects(pods[worker].metadata.name, gateway_ip, gateway_port), "a worker's egress reached the gateway"
    assert _connects(outsider, gateway_ip, gateway_port, OUTSIDE), "another namespace cannot reach the gateway's port"
    assert not _connects(outsider, pods[worker].status.pod_ip, metrics_port, OUTSIDE), (
        "default-deny let another namespace into a worker's port")
    assert not _connects(outsider, pods["redis"].status.pod_ip, redis_port, OUTSIDE), (
        "Redis is open to other namespaces")


def test_the_checker_reads_redis_through_the_api_server_also_after_its_pod_was_replaced():
    """The load-test checker reads the queues from Redis. The Secret's URL names the Service (redis.<ns>.svc), which
    this machine can neither resolve nor route: loadtests/apiproxy.PodPortRelay forwards each connection to a Ready
    Redis pod through pods/portforward (kubeconfig only), and a connection after the pod was replaced reaches the
    new one. Last here: the stack's Redis restarts (its queues are on its volume) and the gateway reconnects."""
    ns = k.namespace()
    url = k.secret_value(inventory()["queue_secret_name"], "url")
    target = cluster_service(url)
    assert target == (ns, "redis", 6379), "the Secret's URL is not the Service's cluster name"
    queues = [svc["queue"] for svc in SERVICES.values()]
    relay = PodPortRelay.for_service(k.core(), *target)
    try:
        first = RedisQueues(with_address(url, *relay.address), "bull")
        assert first.redis.ping() is True
        assert set(first.depth(queues)) == set(queues)
        first.redis.close()
        k.replace_pod("redis-0")

        def answers():
            again = RedisQueues(with_address(url, *relay.address), "bull")
            try:
                return again.redis.ping() is True and set(again.depth(queues)) == set(queues)
            except Exception:
                return False
            finally:
                again.redis.close()

        stack.wait_for("Redis answering through the relay after its pod was replaced", answers, timeout=60,
                       interval=2)
    finally:
        relay.stop()
    assert not [e for e in relay.errors if "no Ready pod" not in e], relay.errors
    # The rest of the stack reconnects (the tests after this one need the gateway).
    stack.wait_for("the gateway to answer /readyz", stack.gateway_ready, timeout=90, interval=2)
