"""Environment resolution against real Secret, ConfigMap and Pod objects on the local control plane."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from kubernetes import client
from pod_runner_testlib import REPO, wait_for

from workers.pod_runner.kube import KubeAccess
from workers.pod_runner.podspec import LaunchError, build_launch

pytestmark = pytest.mark.cluster

SECRET_VALUE = "s3cr3t-api-key-0123"  # noqa: S105 - a test value that must never show up in output


def _pod(name: str, env: list[dict], env_from: list[dict] | None = None) -> dict:
    return {
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "env-check"}},
        "spec": {
            "terminationGracePeriodSeconds": 7,
            "nodeSelector": {"harness.local/simulated": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "main", "image": "harness.local/env-check:test",
                            "command": ["python3", "-m", "workers.worker"],
                            "args": ["--service", "$(SERVICE)", "--queue=$(QUEUE)", "$$(SERVICE)"],
                            "env": env, "envFrom": env_from or []}],
        },
    }


@pytest.fixture(scope="module")
def objects(core_v1: client.CoreV1Api, namespace: str) -> str:
    core_v1.create_namespaced_secret(namespace, {"metadata": {"name": "api"},
                                                 "stringData": {"key": SECRET_VALUE}})
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "svc"},
                                                     "data": {"queue": "stt-fast", "LEVEL": "DEBUG"}})
    return namespace


def _running(core_v1: client.CoreV1Api, namespace: str, body: dict) -> client.V1Pod:
    core_v1.create_namespaced_pod(namespace, body)
    name = body["metadata"]["name"]
    return wait_for(lambda: (p := core_v1.read_namespaced_pod(name, namespace)).status.phase == "Running"
                    and p.status.pod_ip and p, 60, f"pod {name} Running with an IP")


def test_env_is_resolved_like_the_kubelet_does(core_v1: client.CoreV1Api, objects: str,
                                               kubeconfig: Path) -> None:
    env = [
        {"name": "SERVICE", "value": "stt"},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "api", "key": "key"}}},
        {"name": "QUEUE", "valueFrom": {"configMapKeyRef": {"name": "svc", "key": "queue"}}},
        {"name": "OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "api", "key": "nope", "optional": True}}},
        {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MY_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
        {"name": "MY_LABEL",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app.kubernetes.io/name']"}}},
        {"name": "QUEUE_URL", "value": "redis://127.0.0.1:16379/$(QUEUE)"},
        {"name": "METRICS_PORT", "value": "9101"},  # the manifest's port; the host process gets its own
    ]
    env_from = [{"prefix": "CM_", "configMapRef": {"name": "svc"}}]
    pod = _running(core_v1, objects, _pod("env-ok", env, env_from))
    launch = build_launch(pod, KubeAccess(kubeconfig), REPO, 19123, {"PATH": "/usr/bin", "HOME": "/tmp"})

    assert launch.env["API_KEY"] == SECRET_VALUE
    assert launch.env["QUEUE"] == "stt-fast" and launch.env["QUEUE_URL"] == "redis://127.0.0.1:16379/stt-fast"
    assert launch.env["CM_queue"] == "stt-fast" and launch.env["CM_LEVEL"] == "DEBUG"
    assert "OPTIONAL" not in launch.env
    assert launch.env["MY_NAME"] == launch.env["POD_NAME"] == "env-ok"
    assert launch.env["MY_NS"] == launch.env["POD_NAMESPACE"] == objects
    assert launch.env["MY_NODE"] == launch.env["NODE_NAME"] == pod.spec.node_name
    assert launch.env["MY_IP"] == pod.status.pod_ip and launch.env["MY_IPS"] == pod.status.pod_ip
    assert launch.env["MY_LABEL"] == "env-check"
    assert launch.env["METRICS_PORT"] == "19123" and launch.env["METRICS_HOST"] == "127.0.0.1"
    assert launch.env["PYTHONPATH"] == str(REPO) and launch.env["PATH"] == "/usr/bin"
    assert launch.argv == (sys.executable, "-m", "workers.worker", "--service", "stt", "--queue=stt-fast",
                           "$(SERVICE)")
    assert launch.container == "main" and launch.grace_s == 7 and launch.service == "env-check"
    assert SECRET_VALUE not in repr(launch)


@pytest.mark.parametrize(("name", "env", "env_from", "message"), [
    ("no-secret-key", [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "api", "key": "missing"}}}], None,
     "key 'missing' of Secret {ns}/api not found"),
    ("no-configmap", [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "queue"}}}],
     None, "key 'queue' of ConfigMap {ns}/absent not found"),
    ("no-secret", [], [{"secretRef": {"name": "absent"}}], "envFrom: Secret {ns}/absent not found"),
])
def test_unresolvable_env_stops_the_start_with_a_reason(core_v1: client.CoreV1Api, objects: str,
                                                        kubeconfig: Path, name: str, env: list,
                                                        env_from: list | None, message: str) -> None:
    core_v1.create_namespaced_pod(objects, _pod(name, env, env_from))
    pod = core_v1.read_namespaced_pod(name, objects)
    with pytest.raises(LaunchError) as err:
        build_launch(pod, KubeAccess(kubeconfig), REPO, 19124, {})
    assert message.format(ns=objects) in str(err.value)
    assert SECRET_VALUE not in str(err.value)
