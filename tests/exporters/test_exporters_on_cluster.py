"""Both exporters against the real local control plane: a GPU pod scheduled by the real scheduler on a
kwok GPU node, read through the exporters' own I/O paths. A kwok pod runs nothing: its IP (kwok's pod
network) is outside the exporter's allow list, so its busy ratio is refused before any connection and the pod
counts as idle (a worker's real busy ratio on the real node: molecule/model_services). Skipped when no cluster
answers (the test command brings it up before pytest)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from workers.cost.config import ServiceConfig
from workers.cost.model import compute_costs
from workers.cost.pricing import build_price_table, load_default_prices
from workers.gpu.busy import BusyRatioFetcher
from workers.gpu.cluster import list_gpu_inventory, load_core_v1
from workers.gpu.simulated import SimulationModel
from workers.gpu.sources import SimulatedSource

pytestmark = pytest.mark.cluster

KUBECONFIG = os.environ.get("KUBECONFIG") or str(
    Path.home() / ".local/state/gpu-serving-harness/local/kubeconfig"
)


@pytest.fixture(scope="module")
def core_v1():
    if not Path(KUBECONFIG).is_file():
        pytest.skip(f"no kubeconfig at {KUBECONFIG}")
    api = load_core_v1(KUBECONFIG)
    try:
        api.list_node(_request_timeout=5)
    except Exception as exc:  # no cluster answering: nothing to test against
        pytest.skip(f"the local cluster does not answer: {exc}")
    return api


def _pod(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": "stt"},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {
                    "name": "worker",
                    "image": "worker:test",
                    "ports": [{"name": "metrics", "containerPort": 9400}],
                    "resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
    }


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # retried until the deadline, reported after it
            last_error = exc
        time.sleep(0.5)
    raise TimeoutError(f"{what} within {timeout}s (last error: {last_error})")


def test_gpu_pod_on_a_kwok_node_shows_up_in_both_exporters(core_v1):
    namespace = f"exporter-test-{uuid.uuid4().hex[:8]}"
    core_v1.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    try:
        # The service account controller creates "default" shortly after the namespace; admission
        # refuses pods until then.
        _wait(lambda: core_v1.create_namespaced_pod(namespace, _pod("stt-e2e-1")), 60, "pod created")
        pod = _wait(
            lambda: (
                (p := core_v1.read_namespaced_pod("stt-e2e-1", namespace)).status.phase == "Running" and p
            ),
            120,
            "pod Running on a kwok node",
        )
        node = pod.spec.node_name

        inventory = list_gpu_inventory(core_v1)
        gpu_pod = next(p for p in inventory.pods if p.namespace == namespace)
        # Where its worker would serve, from the pod as the API server has it.
        assert (gpu_pod.metrics_port, gpu_pod.pod_ip) == (9400, pod.status.pod_ip) and gpu_pod.pod_ip
        fetcher = BusyRatioFetcher(timeout=2)
        readout = fetcher.fetch([gpu_pod])
        assert readout.ratios == {}
        assert readout.errors[(namespace, "stt-e2e-1")] == (
            f"metrics URL 'http://{gpu_pod.pod_ip}:9400/metrics': host '{gpu_pod.pod_ip}' is not in "
            "['127.0.0.1', 'localhost', '::1']"
        )
        source = SimulatedSource(lambda: list_gpu_inventory(core_v1), fetcher, SimulationModel())
        mine = [r for r in source.read().readings if r.pod == "stt-e2e-1" and r.namespace == namespace]
        assert len(mine) == 1, mine
        assert mine[0].hostname == node and mine[0].container == "worker" and mine[0].source == "simulated"
        # A DaemonSet pod's selector (its own node) reads that node only, as one dcgm-exporter per node does.
        own = SimulatedSource(
            lambda: list_gpu_inventory(core_v1, node_selector=f"kubernetes.io/hostname={node}"),
            BusyRatioFetcher(timeout=2),
            SimulationModel(),
        ).read().readings
        assert {r.hostname for r in own} == {node}
        assert [r.pod for r in own if r.namespace == namespace] == ["stt-e2e-1"]

        table = build_price_table(load_default_prices())
        snap = compute_costs(
            list_gpu_inventory(core_v1),
            table,
            (ServiceConfig("stt", namespace, "stt", 100.0),),
            "app.kubernetes.io/name",
        )
        node_obj = next(n for n in snap.nodes if n.node == node)
        slots = int(core_v1.read_node(node).metadata.labels["nvidia.com/gpu.replicas"]) * node_obj.gpus
        assert snap.services["stt"].cost_per_hour == pytest.approx(node_obj.node_price_per_hour / slots)
    finally:
        core_v1.delete_namespace(namespace)
