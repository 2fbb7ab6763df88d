"""The metric-pipeline doctor (`python -m workers.doctor`, behind playbooks/verify.yml) run directly against the
local stack: it passes on the healthy pipeline, names the hop and the reason when one is broken, re-checks for
--settle seconds before it gives up, and rejects bad arguments naming them."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.e2e import stack


def _doctor(*extra: str, exporters: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    stack.require_stack()
    # The inventory's endpoints, as verify.yml passes them: service references through the API server.
    endpoints = stack.target()["endpoints"]
    exporters = exporters or endpoints["exporters"]
    argv = [sys.executable, "-m", "workers.doctor", "--kubeconfig", str(stack.KUBECONFIG),
            "--namespace", stack.NAMESPACE, "--prometheus-url", endpoints["prometheus"],
            "--alertmanager-url", endpoints["alertmanager"]]
    argv += [f"--service={name}:{svc['queue']}" for name, svc in stack.SERVICES.items()]
    argv += [f"--exporter={name}={url}" for name, url in exporters.items()]
    started = time.monotonic()
    proc = subprocess.run(argv + list(extra), cwd=stack.ROOT, capture_output=True, text=True, timeout=300)
    return proc, time.monotonic() - started


def test_healthy_pipeline_passes_every_hop():
    proc, _ = _doctor("--settle", "60")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["ok"] is True and result["failed_hop"] is None
    assert [h["hop"] for h in result["hops"]] == [
        "exporters", "prometheus", "apiservice", "adapter", "hpa", "alertmanager"]
    assert all(h["ok"] for h in result["hops"])


def test_a_dead_exporter_is_named_after_the_settle_window():
    # Port 9 (discard) has no listener on this machine: the exporter hop cannot pass however long it waits.
    exporters = {"cost-exporter": "http://127.0.0.1:9/metrics"}
    proc, took = _doctor("--settle", "5", exporters=exporters)
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["failed_hop"] == "exporters"
    assert "cost-exporter" in result["reason"] and "127.0.0.1:9" in result["reason"], result["reason"]
    assert result["attempts"] >= 2 and took >= 5, (result["attempts"], took)
    assert "re-checking for" in proc.stderr
    assert "doctor: FAILED at hop 'exporters'" in proc.stderr


def test_bad_arguments_are_named():
    proc, _ = _doctor("--settle", "-1")
    assert proc.returncode != 0 and "--settle -1.0 must be >= 0 seconds" in proc.stderr, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "workers.doctor", "--kubeconfig", str(stack.KUBECONFIG),
                           "--namespace", "x", "--prometheus-url", "http://127.0.0.1:9", "--alertmanager-url",
                           "http://127.0.0.1:9", "--service", "stt"], cwd=stack.ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "--service 'stt' must look like LEFT:RIGHT" in proc.stderr, proc.stderr
