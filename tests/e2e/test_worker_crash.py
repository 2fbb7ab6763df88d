"""A model worker killed on the real node, as the chaos scenario's kill_worker does it (loadtests/faults.py, the
kubernetes runtime, the one every target with pods uses): the exec'd `kill -KILL -1` reaches the worker, which is
not PID 1 of its pod (roles/model_services: shareProcessNamespace), the container exits 137, the kubelet restarts
it and the worker is Ready again with its model loaded.

Before, the runtime exec'd `kill -KILL 1` and reported the fault done: the kernel drops a SIGKILL sent from inside
a PID namespace to its init, and the images have no `kill` binary, so nothing died and chaos's no-loss verdict
proved nothing about a crash."""

from __future__ import annotations

from kubernetes import client

from loadtests.faults import KubernetesRuntime
from tests.e2e import stack


def _ready(pod: client.V1Pod) -> bool:
    conditions = (pod.status and pod.status.conditions) or []
    return pod.status.phase == "Running" and any(c.type == "Ready" and c.status == "True" for c in conditions)


def test_a_killed_worker_exits_137_and_the_kubelet_restarts_it():
    stack.require_stack()
    core = client.CoreV1Api(stack.kube())
    pods = core.list_namespaced_pod(stack.NAMESPACE, label_selector="app.kubernetes.io/name=stt").items
    ready = sorted((p for p in pods if _ready(p)), key=lambda p: p.metadata.name)
    assert ready, f"no Ready stt pod in {stack.NAMESPACE}: {[p.metadata.name for p in pods]}"
    victim = ready[0].metadata.name
    raw = stack.kube().sanitize_for_serialization(ready[0])

    detail = KubernetesRuntime(core, stack.NAMESPACE).kill_worker(raw)
    print(detail)
    assert "exited 137" in detail, detail  # 128 + SIGKILL: the worker died of the signal, not of a clean exit

    def ready_again() -> bool:
        return _ready(core.read_namespaced_pod(victim, stack.NAMESPACE))

    stack.wait_for(f"pod {victim} Ready again after the kill", ready_again, timeout=180, interval=2)
    after = core.read_namespaced_pod(victim, stack.NAMESPACE)
    terminated = after.status.container_statuses[0].last_state.terminated
    assert terminated is not None and terminated.exit_code == 137, terminated
