"""Kubernetes access: pod lists and watches into a local cache, node labels, Secrets, ConfigMaps, patches.

Each namespace has a watcher thread: list (a full resync), then watch from the list's resourceVersion
for ``resync_s`` seconds, then list again. Every change sets ``changed`` so the reconcile loop wakes at
once instead of waiting for its next tick.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.client import V1Pod
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("workers.pod_runner.kube")

PodKey = tuple[str, str]  # (namespace, name)


class KubeAccess:
    """The only place that talks to the API server. Reads return None where an object is missing."""

    def __init__(self, kubeconfig: Path, timeout_s: float = 10.0) -> None:
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(api_client)
        self.timeout_s = timeout_s

    def list_pods(self, namespace: str, label_selector: str) -> tuple[list[V1Pod], str]:
        result = self.core.list_namespaced_pod(namespace, label_selector=label_selector,
                                               _request_timeout=self.timeout_s)
        return list(result.items), result.metadata.resource_version

    def node_names(self, label_selector: str) -> set[str]:
        nodes = self.core.list_node(label_selector=label_selector, _request_timeout=self.timeout_s)
        return {node.metadata.name for node in nodes.items}

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            secret = self.core.read_namespaced_secret(name, namespace, _request_timeout=self.timeout_s)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}
        return {**data, **(secret.string_data or {})}

    def configmap_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            cm = self.core.read_namespaced_config_map(name, namespace, _request_timeout=self.timeout_s)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(cm.data or {})

    def patch_annotations(self, namespace: str, name: str, annotations: dict[str, str]) -> bool:
        """Merge-patch annotations; False when the pod no longer exists."""
        try:
            self.core.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": annotations}},
                                           _request_timeout=self.timeout_s)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


class PodCache:
    """Pods by (namespace, name), filled by the watchers; the reconcile loop reads snapshots."""

    def __init__(self, namespaces: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        self._pods: dict[PodKey, V1Pod] = {}
        self._synced: set[str] = set()
        self._namespaces = set(namespaces)
        self.changed = threading.Event()

    def replace(self, namespace: str, pods: list[V1Pod]) -> None:
        with self._lock:
            for key in [k for k in self._pods if k[0] == namespace]:
                del self._pods[key]
            for pod in pods:
                self._pods[(namespace, pod.metadata.name)] = pod
            self._synced.add(namespace)
        self.changed.set()

    def put(self, pod: V1Pod) -> None:
        with self._lock:
            self._pods[(pod.metadata.namespace, pod.metadata.name)] = pod
        self.changed.set()

    def remove(self, pod: V1Pod) -> None:
        with self._lock:
            current = self._pods.get((pod.metadata.namespace, pod.metadata.name))
            # A DELETED event for an older incarnation must not drop a newer pod of the same name.
            if current is not None and current.metadata.uid == pod.metadata.uid:
                del self._pods[(pod.metadata.namespace, pod.metadata.name)]
        self.changed.set()

    @property
    def synced(self) -> bool:
        with self._lock:
            return self._synced >= self._namespaces

    def snapshot(self) -> dict[PodKey, V1Pod]:
        with self._lock:
            return dict(self._pods)


class PodWatcher(threading.Thread):
    """List, then watch, for one namespace; a relist every ``resync_s`` seconds is the full resync."""

    def __init__(self, kube: KubeAccess, cache: PodCache, namespace: str, label_selector: str,
                 resync_s: float, stop: threading.Event) -> None:
        super().__init__(name=f"watch-{namespace}", daemon=True)
        self.kube, self.cache, self.namespace, self.selector = kube, cache, namespace, label_selector
        self.resync_s, self.stop = resync_s, stop

    def run(self) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                self._list_and_watch()
                failures = 0
            except ApiException as exc:
                if exc.status == 410:  # resourceVersion too old: relist now
                    continue
                failures += 1
                log.warning("pod watch failed", extra={"namespace": self.namespace, "status": exc.status,
                                                       "reason": exc.reason})
            except Exception as exc:  # the API server restarting must not end the watcher
                failures += 1
                log.warning("pod watch failed", extra={"namespace": self.namespace, "error": repr(exc)})
            if failures:
                self.stop.wait(min(30.0, 0.5 * 2 ** min(failures, 6)))

    def _list_and_watch(self) -> None:
        pods, resource_version = self.kube.list_pods(self.namespace, self.selector)
        self.cache.replace(self.namespace, pods)
        w = watch.Watch()
        deadline = time.monotonic() + self.resync_s
        for event in w.stream(self.kube.core.list_namespaced_pod, self.namespace,
                              label_selector=self.selector, resource_version=resource_version,
                              allow_watch_bookmarks=True, timeout_seconds=max(1, int(self.resync_s)),
                              _request_timeout=self.resync_s + 10):
            kind, pod = event["type"], event["object"]
            if kind in ("ADDED", "MODIFIED"):
                self.cache.put(pod)
            elif kind == "DELETED":
                self.cache.remove(pod)
            elif kind == "ERROR":
                break
            if self.stop.is_set() or time.monotonic() > deadline:
                w.stop()
                break
