"""roles/model_services on the stack: one Deployment per enabled service of the inventory's table, shaped by the
policies (DESIGN.md), every worker a container on the real node holding simulated GPU slots, and a real
text-to-speech job through the gateway."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import kube_checks as k
from tests.e2e import stack

SERVICES = stack.SERVICES
GPU = "nvidia.com/gpu"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_is_a_deployment_shaped_by_the_table_and_the_policies(name):
    svc = SERVICES[name]
    dep = k.apps().read_namespaced_deployment(name, k.namespace())
    pod, container = dep.spec.template.spec, dep.spec.template.spec.containers[0]
    assert dep.spec.strategy.rolling_update.max_unavailable == 0  # a rollout never drops a serving pod
    assert pod.security_context.run_as_non_root and pod.security_context.seccomp_profile.type == "RuntimeDefault"
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.capabilities.drop == ["ALL"]
    assert int(container.resources.limits[GPU]) == svc["gpu"]
    assert container.readiness_probe.http_get.path == "/readyz"
    assert container.liveness_probe.http_get.path == "/healthz"
    assert {e.name: e.value for e in container.env}.get("QUEUE_NAME") == svc["queue"]
    assert pod.share_process_namespace is True  # the worker is not PID 1: a crash fault can reach it


def test_every_service_has_a_disruption_budget_and_a_network_policy():
    pdbs = {p.metadata.name for p in k.policy().list_namespaced_pod_disruption_budget(k.namespace()).items}
    policies = {p.metadata.name for p in k.networking().list_namespaced_network_policy(k.namespace()).items}
    assert set(SERVICES) <= pdbs, pdbs
    assert set(SERVICES) | {"default-deny", "gateway", "redis"} <= policies, policies


def test_every_worker_is_a_ready_container_on_the_real_node_with_its_gpu_slots():
    def at_rest():
        running = {}
        for name, svc in SERVICES.items():
            pods = [p for p in k.pods(f"app.kubernetes.io/name={name}") if p.metadata.deletion_timestamp is None]
            if len(pods) != svc["hpa"]["min"] or not all(k.ready(p) for p in pods):
                return None
            running[name] = pods
        return running

    running = stack.wait_for("every service at its HPA minimum, all ready", at_rest, timeout=180, interval=3)
    for name, pods in running.items():
        for p in pods:
            assert p.spec.node_name == k.real_node_name(), (p.metadata.name, p.spec.node_name)
            limits = p.spec.containers[0].resources.limits
            assert int(limits[GPU]) == SERVICES[name]["gpu"], (p.metadata.name, limits)
            state = p.status.container_statuses[0]
            assert state.state.running is not None and state.image_id, (p.metadata.name, state)


def request(path: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {})}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{stack.url('gateway')}{path}", data=data, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (a loopback relay to the API server)
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_a_text_to_speech_job_completes_through_the_gateway_and_a_keyless_one_is_refused():
    assert "tts" in SERVICES, f"the local inventory enables {sorted(SERVICES)}: this check submits a tts job"
    key = k.api_key()
    status, accepted = request("/v1/jobs/tts", {"text": "The molecule scenario checks the whole path."}, key)
    assert status == 202, (status, accepted)

    def finished():
        status, view = request(f"/v1/jobs/{accepted['id']}", key=key)
        assert status == 200, (status, view)
        return view if view["status"] in ("completed", "failed") else None

    view = stack.wait_for(f"job {accepted['id']} to finish", finished, timeout=180, interval=2)
    assert view["status"] == "completed", view
    assert view.get("audio_url"), view
    assert request("/v1/jobs/tts", {"text": "no key"})[0] == 401

    # The node's simulated DCGM exporter reads each worker's busy ratio at its pod's IP (the port named metrics):
    # the worker that just ran the job shows a utilisation above 0 for its 30 s window, and no worker is unread.
    # (Before, only the retired pod runner's annotation was read: every real worker was idle, GPU util 0.)
    def busy_reading():
        util, unavailable = {}, None
        for family in text_string_to_metric_families(k.exporter_text("nvidia-dcgm-exporter")):
            for sample in family.samples:
                if sample.name == "DCGM_FI_DEV_GPU_UTIL" and sample.labels.get("namespace") == k.namespace():
                    util[sample.labels["pod"]] = sample.value
                elif sample.name == "gpu_exporter_busy_ratio_unavailable":
                    unavailable = sample.value
        tts = {pod: value for pod, value in util.items() if pod.startswith("tts-")}
        return (tts, unavailable) if unavailable == 0 and any(v > 0 for v in tts.values()) else None

    tts, _ = stack.wait_for("a tts worker busy in the DCGM exporter", busy_reading, timeout=25, interval=2)
    assert all(0 <= v <= 100 for v in tts.values()), tts
