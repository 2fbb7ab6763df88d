"""Access to the running local stack (brought up by `make run`/`make test` before pytest) for e2e tests.

Where the stack is reached comes from the inventory, asked of Ansible (roles/harness: ``harness_endpoints``, the
values verify.yml and loadtest.yml pass to their programs), so these tests take the path the playbooks take: the
services are pods on the local target's real node (``local_real_node_enabled``, the inventory's value), the gateway
and Prometheus are Services reached through the API server with the kubeconfig only (loopback relays of
loadtests/apiproxy.py), the API key is the gateway's Secret and the cost configuration its ConfigMap.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from loadtests import inventory as inventory_facts
from loadtests.apiproxy import ServiceRelay

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "inventories/local"
STATE = Path(os.environ.get("HARNESS_STATE_DIR", Path.home() / ".local/state/gpu-serving-harness/local"))
KUBECONFIG = STATE / "kubeconfig"
# The enabled services of the local inventory (the harness role's table unless the inventory sets its own).
SERVICES = {s["name"]: s for s in inventory_facts.services(INVENTORY)}
NAMESPACE = "model-serving"


def require_stack() -> None:
    if not KUBECONFIG.exists():
        pytest.fail(f"{KUBECONFIG} is missing: bring the local target up first with `make run` "
                    "(or scripts/in-venv ansible-playbook -i inventories/local playbooks/site.yml)")


@cache
def target() -> dict[str, Any]:
    """The inventory's answers: the stack's endpoints, namespaces, and the address Alertmanager's loadtest-checker
    webhook points at."""
    return inventory_facts.ansible_value(
        '{"endpoints": harness_endpoints,'
        ' "namespace": harness_namespace, "monitoring_namespace": harness_monitoring_namespace,'
        ' "webhook": prometheus_stack_alert_webhooks | default([]) | selectattr("name", "equalto", "loadtest-checker")'
        ' | map(attribute="url") | first | default("")}',
        INVENTORY)


@cache
def kube() -> client.ApiClient:
    require_stack()
    return config.new_client_from_config(config_file=str(KUBECONFIG))


@cache
def url(name: str) -> str:
    """A base URL for endpoint ``name`` (gateway, prometheus, alertmanager): a relay through the API server's
    service proxy for a service reference (running until the tests end); a URL an inventory gives as is."""
    ref = target()["endpoints"][name]
    if not ref.startswith("service:"):
        return ref
    relay = ServiceRelay.start(kube(), ref)
    atexit.register(relay.stop)
    return relay.url


def http_json(address: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 10) -> dict:
    """GET or POST JSON; a 429 (the gateway's per-key rate limit) is retried after its Retry-After."""
    for _ in range(60):
        req = urllib.request.Request(address, data=data, headers=headers or {})  # noqa: S310 (loopback URLs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 429:
                raise
            time.sleep(float(exc.headers.get("Retry-After", "1")))
    raise AssertionError(f"{address} kept answering 429 for 60 tries")


def prom_query(expr: str) -> list[dict]:
    body = http_json(f"{url('prometheus')}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    return body["data"]["result"]


def prom_value(expr: str, default: float | None = None) -> float | None:
    result = prom_query(expr)
    return float(result[0]["value"][1]) if result else default


def gateway_ready() -> bool:
    """Whether the gateway answers /readyz (through its relay)."""
    try:
        with urllib.request.urlopen(f"{url('gateway')}/readyz", timeout=5) as resp:  # noqa: S310 (loopback relay)
            return resp.status == 200
    except OSError:  # urllib.error.URLError included
        return False


class NotYet:
    """A falsy answer of a wait_for check that says why (its repr is what a timed-out wait prints)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return self.reason


def wait_for(what: str, check: Callable[[], object], timeout: float, interval: float = 1.0):
    """Poll until check() returns a truthy value; fail naming `what` and the last value seen (a NotYet's reason)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")


class PrometheusSwitch:
    """Stops and starts the stack's Prometheus: the operator's Prometheus object scaled to 0 replicas and back (the
    operator scales its StatefulSet, and the prometheus-operated Service has no endpoint meanwhile)."""

    GROUP, VERSION, PLURAL = "monitoring.coreos.com", "v1", "prometheuses"
    MANAGER = "harness-e2e"

    def __init__(self) -> None:
        self.replicas: int | None = None
        self.name: str | None = None
        self.owners: list[dict] = []

    def _api(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(kube())

    def stop(self) -> str:
        ns = target()["monitoring_namespace"]
        items = self._api().list_namespaced_custom_object(self.GROUP, self.VERSION, ns, self.PLURAL)["items"]
        names = [i["metadata"]["name"] for i in items]
        assert len(items) == 1, f"expected one Prometheus object in {ns}, found {names}"
        self.name = items[0]["metadata"]["name"]
        self.replicas = int(items[0]["spec"].get("replicas", 1))
        self.owners = items[0]["metadata"].get("managedFields") or []
        self._scale(0)
        core = client.CoreV1Api(kube())
        wait_for(f"the pods of Prometheus {ns}/{self.name} to go", lambda: not core.list_namespaced_pod(
            ns, label_selector=f"prometheus={self.name}").items, timeout=120, interval=2)
        return f"Prometheus {ns}/{self.name}: replicas {self.replicas} -> 0"

    def start(self) -> str:
        if self.name is None:
            return "nothing was stopped"
        self._scale(self.replicas or 1)
        # The object as site.yml left it, field owners included: this test's change of spec.replicas took the field
        # from site.yml's apply (an update by another manager moves ownership), and the next site.yml would report
        # reclaiming it as a change. The owners of spec are put back as they were; status keeps its current owner.
        ns = target()["monitoring_namespace"]
        obj = self._api().get_namespaced_custom_object(self.GROUP, self.VERSION, ns, self.PLURAL, self.name)
        now = [m for m in obj["metadata"].get("managedFields") or [] if m.get("manager") != self.MANAGER]
        owners = [m for m in now if m.get("subresource") == "status"]
        owners += [m for m in self.owners if m.get("subresource") != "status"]
        self._api().patch_namespaced_custom_object(self.GROUP, self.VERSION, ns, self.PLURAL, self.name,
                                                   {"metadata": {"managedFields": owners}})
        return f"Prometheus {ns}/{self.name}: replicas 0 -> {self.replicas}"

    def _scale(self, replicas: int) -> None:
        self._api().patch_namespaced_custom_object(self.GROUP, self.VERSION, target()["monitoring_namespace"],
                                                   self.PLURAL, self.name, {"spec": {"replicas": replicas}},
                                                   field_manager=self.MANAGER)


def run_playbook(playbook: str, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "inventories/local", f"playbooks/{playbook}",
         *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"},
    )
