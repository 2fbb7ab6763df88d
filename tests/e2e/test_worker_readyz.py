"""The checker asks each worker's own /readyz through the API server's pod proxy (loadtests.sources.Kube.readyz,
the reaction timeline's worker_ready hop and the kill-worker fault), with the kubeconfig only, as on every
target: on the real node it answers True for every Ready stt and tts worker. A port name in that path fails on
v1.35.4 (stream error), which only a live API server shows."""

from __future__ import annotations

import pytest

from loadtests.sources import Kube, SourceError
from tests.e2e import stack


@pytest.mark.parametrize("service", ["stt", "tts"])
def test_every_ready_worker_answers_its_readyz_through_the_api_server(service):
    stack.require_stack()
    kube = Kube(str(stack.KUBECONFIG), stack.NAMESPACE)
    pods = [p for p in kube.pods(service) if (p.get("status") or {}).get("phase") == "Running"]
    ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                    for c in p["status"].get("conditions") or [])]
    assert ready, f"no Ready {service} pod: {[p['metadata']['name'] for p in pods]}"
    assert [kube.readyz(p) for p in ready] == [True] * len(ready)


def test_a_pod_without_a_port_is_named():
    stack.require_stack()
    kube = Kube(str(stack.KUBECONFIG), stack.NAMESPACE)
    with pytest.raises(SourceError, match="no container port"):
        kube.readyz({"metadata": {"name": "nothing"}, "spec": {"containers": [{"name": "x"}]}})
