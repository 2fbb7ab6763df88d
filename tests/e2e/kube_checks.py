"""The molecule scenarios' checks of the service roles on the local inventory's stack (molecule/<role>/tests):
the objects, pods and answers of the stack through the API server with the kubeconfig only, the way any
inventory's user reaches them. What they are checked against comes from the inventory (the service table,
the profile) and the roles' documented defaults, never from the live objects themselves."""

from __future__ import annotations

import base64
import hashlib
from functools import cache
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from loadtests import inventory as inventory_facts
from loadtests.faults import exec_in_container
from tests.e2e import stack
from workers.doctor.hops import service_proxy_path


def core() -> client.CoreV1Api:
    return client.CoreV1Api(stack.kube())


def apps() -> client.AppsV1Api:
    return client.AppsV1Api(stack.kube())


def policy() -> client.PolicyV1Api:
    return client.PolicyV1Api(stack.kube())


def networking() -> client.NetworkingV1Api:
    return client.NetworkingV1Api(stack.kube())


def autoscaling() -> client.AutoscalingV2Api:
    return client.AutoscalingV2Api(stack.kube())


def custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(stack.kube())


def namespace() -> str:
    return stack.target()["namespace"]


@cache
def defaults(role: str) -> dict[str, Any]:
    """A role's defaults/main.yml as written (the literals a check compares against)."""
    return inventory_facts.role_defaults(role)


def real_node_name() -> str:
    return defaults("real_node")["real_node_name"]


def exec_in(pod: str, command: list[str], container: str | None = None, ns: str | None = None,
            timeout: float = 30) -> tuple[int | None, str]:
    """Run ``command`` in a container of ``pod`` (pods/exec through the API server): its exit code and output."""
    ns = ns or namespace()
    if container is None:
        container = core().read_namespaced_pod(pod, ns).spec.containers[0].name
    return exec_in_container(core(), ns, pod, container, command, timeout=timeout)


def secret_value(name: str, key: str, ns: str | None = None) -> str:
    secret = core().read_namespaced_secret(name, ns or namespace())
    return base64.b64decode((secret.data or {})[key]).decode()


def api_key() -> str:
    """The gateway's API key from where the inventory says it is (``secret:<name>/<key>``, generated on first run)."""
    ref = stack.target()["endpoints"]["api_key"]
    assert ref.startswith("secret:"), f"the gateway's API key is {ref!r}, not a Secret of the cluster"
    name, _, key = ref.removeprefix("secret:").partition("/")
    return secret_value(name, key)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def raw_get(path: str) -> Any:
    """GET an API server path (an aggregated API, a proxy) and its JSON, as ``kubectl get --raw`` does."""
    body, status, _ = stack.kube().call_api(path, "GET", auth_settings=["BearerToken"], response_type="object",
                                            _return_http_data_only=False, _request_timeout=30)
    assert status == 200, f"GET {path}: HTTP {status}"
    return body


def exporter_text(name: str) -> str:
    """An exporter's /metrics text, from where the inventory says it is (``service:<ns>/<name>:<port>/<path>``),
    through the API server's service proxy."""
    ref = stack.target()["endpoints"]["exporters"][name]
    path = service_proxy_path(ref)
    assert path, f"exporter {name} is {ref!r}, not a Service of the cluster"
    resp = stack.kube().call_api(path, "GET", auth_settings=["BearerToken"], _preload_content=False,
                                 _return_http_data_only=True, _request_timeout=30)
    return resp.data.decode()


def pods(selector: str, ns: str | None = None) -> list[client.V1Pod]:
    return core().list_namespaced_pod(ns or namespace(), label_selector=selector).items


def ready(pod: client.V1Pod) -> bool:
    return pod.status.phase == "Running" and all(c.ready for c in pod.status.container_statuses or [])


def replace_pod(name: str, timeout: float = 180, ns: str | None = None) -> client.V1Pod:
    """Delete pod ``name`` and wait until its controller's replacement (same name, a new uid) is Ready."""
    ns = ns or namespace()
    old = core().read_namespaced_pod(name, ns).metadata.uid
    core().delete_namespaced_pod(name, ns)

    def replaced():
        try:
            pod = core().read_namespaced_pod(name, ns)
        except ApiException:  # between the old pod's removal and the new one
            return None
        return pod if pod.metadata.uid != old and ready(pod) else None

    return stack.wait_for(f"{name} back Ready as a new pod", replaced, timeout=timeout, interval=2)
