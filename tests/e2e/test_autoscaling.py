"""Queue depth drives the stt HPA on the local target, as the policy table says, with real workers.

N jobs go through the real gateway into the stt queue. The test samples the HPA, the Deployment, the
queue depth in Prometheus and the pod runner's worker processes, then checks:
- the HPA scales stt up to its maximum (queue depth per pod x max < N), within a timeout;
- no step is larger than the scale-up policy allows (Percent and Pods policies, selectPolicy Max) within
  one policy period, and no scale-down step larger than the scale-down policy allows;
- the pod runner runs as many real worker processes as the Deployment has replicas;
- the queue drains, every job completes (counted), and stt returns to its minimum.
"""

from __future__ import annotations

import math
import re
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubernetes import client

from tests.e2e import stack

JOBS = 160


def _hpa_periods() -> dict:
    hpa = client.AutoscalingV2Api(stack.kube()).read_namespaced_horizontal_pod_autoscaler("stt", stack.NAMESPACE)
    up, down = hpa.spec.behavior.scale_up, hpa.spec.behavior.scale_down
    return {
        "min": hpa.spec.min_replicas, "max": hpa.spec.max_replicas,
        "up": {p.type: (p.value, p.period_seconds) for p in up.policies},
        "down": {p.type: (p.value, p.period_seconds) for p in down.policies},
    }


def _max_up(start: int, policies: dict) -> int:
    limits = []
    if "Percent" in policies:
        limits.append(math.ceil(start * (1 + policies["Percent"][0] / 100)))
    if "Pods" in policies:
        limits.append(start + policies["Pods"][0])
    return max(limits)


def _min_down(start: int, policies: dict) -> int:
    limits = []
    if "Percent" in policies:
        limits.append(int(start * (1 - policies["Percent"][0] / 100)))
    if "Pods" in policies:
        limits.append(start - policies["Pods"][0])
    return min(limits)


def _runner_processes() -> int:
    url = f"http://127.0.0.1:{stack.PORTS['model_services_pod_runner_port']}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    counts = {}
    for m in re.finditer(r'^container_cpu_usage_seconds_total\{([^}]*)\}', text, re.M):
        pod = re.search(r'pod="([^"]+)"', m.group(1)).group(1)
        counts[pod] = 1
    return sum(1 for pod in counts if pod.startswith("stt-"))


class Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[dict] = []
        self.stop = threading.Event()
        self.apps = client.AppsV1Api(stack.kube())

    def run(self) -> None:
        t0 = time.monotonic()
        self.errors: list[str] = []
        while not self.stop.is_set():
            try:
                dep = self.apps.read_namespaced_deployment("stt", stack.NAMESPACE)
                self.samples.append({
                    "t": time.monotonic() - t0,
                    "replicas": dep.spec.replicas,
                    "depth": stack.prom_value('redis_queue_depth{queue_name="stt"}', 0.0),
                    "processes": _runner_processes(),
                })
            except Exception as exc:  # a failed read is recorded and retried; the waits name what is missing
                self.errors.append(f"{time.monotonic() - t0:.1f}s {type(exc).__name__}: {exc}")
            self.stop.wait(1.0)


@pytest.mark.slow
def test_queue_depth_scales_stt_up_to_max_and_back_to_min():
    policy = _hpa_periods()
    apps = client.AppsV1Api(stack.kube())
    # At the minimum and steady for two scale-up periods, so the first step is predictable.
    steady_for = 2 * max(p for _, p in policy["up"].values())
    since = {"t": None}

    def steady_at_min() -> bool:
        at_min = apps.read_namespaced_deployment("stt", stack.NAMESPACE).spec.replicas == policy["min"]
        since["t"] = (since["t"] or time.monotonic()) if at_min else None
        return at_min and time.monotonic() - since["t"] >= steady_for

    stack.wait_for("stt steady at its minimum before the load", steady_at_min, timeout=300, interval=1)
    assert policy["max"] * stack.SERVICES["stt"]["hpa"]["queue_depth_per_pod"] < JOBS

    sampler = Sampler()
    sampler.start()
    key = stack.api_key()
    audio = stack.speech_wav("Scaling follows the queue. Every job in this test is transcribed by a real worker.")
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda _: stack.submit_stt(audio, key), range(JOBS)))
    assert len(set(ids)) == JOBS

    try:
        stack.wait_for(f"stt to scale up to its maximum {policy['max']}",
                       lambda: sampler.samples and sampler.samples[-1]["replicas"] == policy["max"], timeout=180)
        stack.wait_for("one worker process per stt replica at the peak",
                       lambda: sampler.samples[-1]["processes"] == policy["max"], timeout=90)
        stack.wait_for("the stt queue to drain",
                       lambda: sampler.samples[-1]["depth"] == 0, timeout=600, interval=2)
        stack.wait_for(f"stt back to its minimum {policy['min']}",
                       lambda: sampler.samples[-1]["replicas"] == policy["min"], timeout=300, interval=2)
        stack.wait_for("worker processes back to the minimum",
                       lambda: sampler.samples[-1]["processes"] == policy["min"], timeout=200, interval=2)
    finally:
        sampler.stop.set()
        sampler.join()
        print("sampler errors:", sampler.errors[-5:])
        print("samples (t, replicas, depth, processes):",
              [(round(x["t"]), x["replicas"], x["depth"], x["processes"]) for x in sampler.samples][::5])

    samples = sampler.samples
    # The HPA limits a step by the replica count at the start of the policy period (now - periodSeconds),
    # counting both its scale-ups and scale-downs inside the period. Samples are ~1 s apart, so the count
    # at the period start is taken as the loosest value within 2 s of it.
    for kind, period_policies, check in (("up", policy["up"], _max_up), ("down", policy["down"], _min_down)):
        period = min(p for _, p in period_policies.values())
        for b in samples:
            near = [a["replicas"] for a in samples if abs(a["t"] - (b["t"] - period)) <= 2.0]
            if not near:
                continue
            if kind == "up":
                limit = check(max(near), period_policies)
                assert b["replicas"] <= limit, (
                    f"at t={b['t']:.1f}s stt has {b['replicas']} replicas; {period}s earlier it had {near}: the "
                    f"scale-up policy {period_policies} allows at most {limit}")
            else:
                limit = check(min(near), period_policies)
                assert b["replicas"] >= limit, (
                    f"at t={b['t']:.1f}s stt has {b['replicas']} replicas; {period}s earlier it had {near}: the "
                    f"scale-down policy {period_policies} allows at least {limit}")
    assert max(s["replicas"] for s in samples) == policy["max"]

    statuses = [stack.job_status(i, key)["status"] for i in ids]
    assert statuses.count("completed") == JOBS, {s: statuses.count(s) for s in set(statuses)}
