"""What to run for a pod: its first container's command, args and environment, resolved for the host.

The environment is resolved the way the kubelet does it for ``env`` (literal values, ``valueFrom`` with
``secretKeyRef``, ``configMapKeyRef`` and ``fieldRef``) and ``envFrom``, including ``$(VAR)`` references
in values, command and args. Then the runner's own values go on top: POD_NAME, POD_NAMESPACE, NODE_NAME,
METRICS_HOST, METRICS_PORT and PYTHONPATH. Values are never logged: only the variable names.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kubernetes.client import V1Container, V1EnvVar, V1Pod, V1PodStatus

DEFAULT_GRACE_S = 30
SERVICE_LABELS = ("app.kubernetes.io/name", "harness.local/service")
_PYTHON_NAMES = ("python", "python3")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class LaunchError(ValueError):
    """The pod cannot be started as it stands (like the kubelet's CreateContainerConfigError)."""


class ValueLookup(Protocol):
    """Reads a Secret's or ConfigMap's data (decoded); None when the object does not exist."""

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...

    def configmap_data(self, namespace: str, name: str) -> dict[str, str] | None: ...


@dataclass(frozen=True)
class Launch:
    argv: tuple[str, ...]
    env: dict[str, str] = field(repr=False)  # holds secret values: keep out of reprs and logs
    container: str
    grace_s: int
    service: str
    restart_policy: str


def grace_seconds(pod: V1Pod) -> int:
    """The grace period a stop gets: a deletion's own (``--grace-period=N``) when it set one, else the spec's.

    A deletion grace of 0 is not taken at its word: kwok deletes every terminating pod at once with grace 0
    (it plays a kubelet that has already finished), which would otherwise kill workers mid-job.
    """
    deletion = pod.metadata.deletion_grace_period_seconds
    if deletion is not None and deletion > 0:
        return int(deletion)
    if pod.spec.termination_grace_period_seconds is not None:
        return int(pod.spec.termination_grace_period_seconds)
    return DEFAULT_GRACE_S


def service_name(pod: V1Pod) -> str:
    labels = pod.metadata.labels or {}
    return next((labels[k] for k in SERVICE_LABELS if labels.get(k)), "")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined names are replaced, unknown ones kept, ``$$`` is ``$``."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(sub, text)


def _ip_list(status, *names: str) -> list:
    """The kubernetes client names podIPs `pod_ips` in recent releases and `pod_i_ps` in older ones."""
    for name in names:
        value = getattr(status, name, None)
        if value:
            return value
    return []


def field_value(pod: V1Pod, path: str) -> str:
    status = pod.status or V1PodStatus()
    values = {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.podIP": status.pod_ip,
        "status.podIPs": ",".join(ip.ip for ip in _ip_list(status, "pod_ips", "pod_i_ps")) or status.pod_ip,
        "status.hostIP": status.host_ip,
        "status.hostIPs": ",".join(ip.ip for ip in _ip_list(status, "host_ips", "host_i_ps")) or status.host_ip,
    }
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        source = pod.metadata.labels if match.group(1) == "labels" else pod.metadata.annotations
        return (source or {}).get(match.group(2), "")
    if path not in values:
        raise LaunchError(f"fieldRef {path!r} is not supported; supported: {', '.join(sorted(values))}")
    return values[path] or ""


def container_env(pod: V1Pod, container: V1Container, lookup: ValueLookup) -> dict[str, str]:
    """The container's own environment: envFrom first, then env in order, as the kubelet builds it."""
    ns = pod.metadata.namespace
    env: dict[str, str] = {}
    for source in container.env_from or []:
        if source.config_map_ref is not None:
            ref, kind = source.config_map_ref, "ConfigMap"
        elif source.secret_ref is not None:
            ref, kind = source.secret_ref, "Secret"
        else:
            continue
        data = _read(lookup, kind, ns, ref.name)
        if data is None and not ref.optional:
            raise LaunchError(f"envFrom: {kind} {ns}/{ref.name} not found")
        env.update({(source.prefix or "") + key: value for key, value in sorted((data or {}).items())})
    for var in container.env or []:
        value = _env_value(pod, var, lookup, env)
        if value is not None:
            env[var.name] = value
    return env


def _read(lookup: ValueLookup, kind: str, namespace: str, name: str) -> dict[str, str] | None:
    return lookup.secret_data(namespace, name) if kind == "Secret" else lookup.configmap_data(namespace, name)


def _env_value(pod: V1Pod, var: V1EnvVar, lookup: ValueLookup, env: Mapping[str, str]) -> str | None:
    if var.value_from is None:
        return expand(var.value or "", env)
    source = var.value_from
    if source.field_ref is not None:
        return field_value(pod, source.field_ref.field_path)
    if source.secret_key_ref is not None:
        ref, kind = source.secret_key_ref, "Secret"
    elif source.config_map_key_ref is not None:
        ref, kind = source.config_map_key_ref, "ConfigMap"
    else:
        raise LaunchError(f"env {var.name}: only value, fieldRef, secretKeyRef and configMapKeyRef "
                          "are supported")
    ns = pod.metadata.namespace
    value = (_read(lookup, kind, ns, ref.name) or {}).get(ref.key)
    if value is None and not ref.optional:
        raise LaunchError(f"env {var.name}: key {ref.key!r} of {kind} {ns}/{ref.name} not found")
    return value


def build_launch(pod: V1Pod, lookup: ValueLookup, workdir: Path, port: int,
                 inherited: Mapping[str, str]) -> Launch:
    """Resolve the first container of ``pod`` into a host command line and environment."""
    if not pod.spec.containers:
        raise LaunchError("the pod has no containers")
    container = pod.spec.containers[0]
    if not container.command:
        raise LaunchError(f"container {container.name!r} has no command: the image entrypoint cannot run "
                          "on the host, so the pod must name its command")
    env = dict(inherited)
    env.update(container_env(pod, container, lookup))
    env.update({
        "POD_NAME": pod.metadata.name,
        "POD_NAMESPACE": pod.metadata.namespace,
        "NODE_NAME": pod.spec.node_name or "",
        "METRICS_HOST": "127.0.0.1",
        "METRICS_PORT": str(port),
        "PYTHONPATH": ":".join(p for p in (str(workdir), env.get("PYTHONPATH", "")) if p),
    })
    argv = [expand(part, env) for part in [*container.command, *(container.args or [])]]
    if argv[0] in _PYTHON_NAMES:
        argv[0] = sys.executable  # the harness virtualenv, not whatever python is first on PATH
    return Launch(argv=tuple(argv), env=env, container=container.name, grace_s=grace_seconds(pod),
                  service=service_name(pod), restart_policy=pod.spec.restart_policy or "Always")
