"""Stopping Prometheus (its operator object scaled to 0): verify.yml fails naming that hop, the HPAs keep their
replica counts (no collapse to the minimum), and after Prometheus restarts the pipeline recovers without
intervention."""

from __future__ import annotations

import time

from kubernetes import client

from tests.e2e import stack


def _replicas(apps: client.AppsV1Api) -> dict[str, int]:
    return {name: apps.read_namespaced_deployment(name, stack.NAMESPACE).spec.replicas for name in stack.SERVICES}


def test_prometheus_outage_is_named_and_harmless():
    apps = client.AppsV1Api(stack.kube())
    hpas = client.AutoscalingV2Api(stack.kube())
    before = stack.run_playbook("verify.yml", timeout=300)
    assert before.returncode == 0, before.stdout[-3000:]
    replicas = _replicas(apps)

    switch = stack.PrometheusSwitch()
    print(switch.stop())
    try:
        # A short settle window: the hop cannot pass however long the doctor re-checks it.
        during = stack.run_playbook("verify.yml", "-e", "verify_settle_seconds=20", timeout=300)
        assert during.returncode != 0
        assert "FAILED at hop 'prometheus'" in during.stdout, during.stdout[-3000:]
        # The HPA controller cannot read its metrics now; it must hold, not scale to the minimum.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert _replicas(apps) == replicas
            time.sleep(2)
        hpa = hpas.read_namespaced_horizontal_pod_autoscaler("stt", stack.NAMESPACE)
        active = next(c for c in hpa.status.conditions if c.type == "ScalingActive")
        assert active.status == "False", f"stt HPA still ScalingActive without Prometheus: {active}"
    finally:
        print(switch.start())

    def recovered() -> bool:
        return stack.run_playbook("verify.yml", timeout=300).returncode == 0

    stack.wait_for("verify.yml to pass again after Prometheus restarted", recovered, timeout=600, interval=5)
    assert _replicas(apps) == replicas
