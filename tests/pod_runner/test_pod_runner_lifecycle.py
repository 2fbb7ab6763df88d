"""The pod runner against the real local control plane: the real scheduler places the Deployment's pods
on kwok GPU nodes, kwok marks them Running, and the runner turns each into a real host process.

One Deployment goes through the life a model service has under an HPA: scale 0 -> 3, 3 -> 1, a worker
crash, a runner crash (its workers become stale), and a runner shutdown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from kubernetes import client
from pod_runner_testlib import (
    REPO,
    RunnerProcess,
    pid_alive,
    read_file_sd,
    sample,
    scrape,
    start_runner,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

APP = "fake-stt"
GRACE_S = 10
JOB_S = 1.5  # the job in hand when SIGTERM arrives; the runner must let it finish

# The container command: serves /metrics on $METRICS_PORT, burns a little CPU, and on SIGTERM finishes
# the job in hand, leaves a marker, and exits 0. Markers are named <pod>.<pid>.<what>.
WORKER = textwrap.dedent("""
    import json, os, signal, sys, time
    from pathlib import Path
    from prometheus_client import Counter, start_http_server
    marker = f"{os.environ['MARKER_DIR']}/{os.environ['POD_NAME']}.{os.getpid()}"
    jobs = Counter("fake_jobs", "Jobs done.")
    start_http_server(int(os.environ["METRICS_PORT"]), addr=os.environ["METRICS_HOST"])
    keys = ("POD_NAME", "POD_NAMESPACE", "NODE_NAME", "METRICS_PORT", "METRICS_HOST", "SERVICE", "PYTHONPATH")
    Path(marker + ".started").write_text(json.dumps({k: os.environ.get(k) for k in keys}))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    while not stopping:
        sum(i * i for i in range(20000))
        jobs.inc()
        time.sleep(0.05)
    time.sleep(float(os.environ["JOB_SECONDS"]))
    Path(marker + ".graceful").write_text("finished the job in hand")
    sys.exit(0)
""")


def deployment(marker_dir: Path) -> dict:
    labels = {"app.kubernetes.io/name": APP, "harness.local/run-on-host": "true"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": APP, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app.kubernetes.io/name": APP}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": GRACE_S,
                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{
                        "name": "worker",
                        "image": "harness.local/fake-stt:test",
                        "command": ["python", "-c", WORKER],
                        "env": [
                            {"name": "MARKER_DIR", "value": str(marker_dir)},
                            {"name": "JOB_SECONDS", "value": str(JOB_S)},
                            {"name": "SERVICE", "value": "stt"},
                        ],
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    }],
                },
            },
        },
    }


class Cluster:
    def __init__(self, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str) -> None:
        self.core, self.apps, self.namespace = core, apps, namespace

    def scale(self, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale(APP, self.namespace, {"spec": {"replicas": replicas}})

    def pods(self) -> list[client.V1Pod]:
        selector = f"app.kubernetes.io/name={APP}"
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def annotated(self, count: int) -> dict[str, tuple[int, int]] | None:
        """{pod: (pid, port)} once exactly ``count`` live pods carry annotations of live processes."""
        found = {}
        for pod in self.pods():
            if pod.metadata.deletion_timestamp is not None:
                continue
            ann = pod.metadata.annotations or {}
            pid, url = ann.get("harness.local/host-pid"), ann.get("harness.local/metrics-url")
            if not pid or not url or not pid_alive(int(pid)):
                return None
            assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics"), url
            found[pod.metadata.name] = (int(pid), int(url.split(":")[2].split("/")[0]))
        return found if len(found) == count else None


def _targets(runner_state: Path) -> dict[str, dict]:
    return {group["labels"]["pod"]: group for group in read_file_sd(runner_state / "file_sd.json")}


def test_pods_become_host_processes_and_follow_scaling(
        core_v1: client.CoreV1Api, apps_v1: client.AppsV1Api, namespace: str, kubeconfig: Path,
        tmp_path: Path) -> None:
    state, markers = tmp_path / "state", tmp_path / "markers"
    state.mkdir()
    markers.mkdir()
    cluster = Cluster(core_v1, apps_v1, namespace)
    apps_v1.create_namespaced_deployment(namespace, deployment(markers))
    runner = start_runner(kubeconfig, namespace, state)
    runners = [runner]
    try:
        _scale_up(cluster, runner, state, markers)
        _scale_down(cluster, runner, state, markers)
        survivor = _worker_crash(cluster, runner, state, markers)
        runner = _runner_crash(cluster, runner, kubeconfig, namespace, state, markers, survivor)
        runners.append(runner)
        _runner_shutdown(cluster, runner, state, markers)
    except BaseException:
        for r in runners:
            print(f"--- runner log {r.log_path}:\n" + r.log_path.read_text(errors="replace")[-6000:])
        raise
    finally:
        for r in runners:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait(timeout=10)
        _kill_workers_of(markers)  # never leave a worker behind, whatever failed


def _kill_workers_of(markers: Path) -> None:
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("MARKER_DIR") == str(markers):
                proc.kill()


def proc_usage(pid: int) -> tuple[float, int]:
    """(utime + stime in seconds, RSS in bytes) of one process, read here from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return cpu, int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _scale_up(cluster: Cluster, runner: RunnerProcess, state: Path, markers: Path) -> None:
    assert read_file_sd(state / "file_sd.json") == []
    cluster.scale(3)
    procs = wait_for(lambda: cluster.annotated(3), 60, "three pods annotated with live host processes")
    ports = [port for _, port in procs.values()]
    assert len(set(ports)) == 3, f"ports are not distinct: {procs}"
    assert all(19100 <= p <= 19999 for p in ports), ports

    targets = wait_for(lambda: len(_targets(state)) == 3 and _targets(state), 10, "three file_sd targets")
    nodes = {pod.metadata.name: pod.spec.node_name for pod in cluster.pods()}
    for pod, (pid, port) in procs.items():
        assert targets[pod] == {"targets": [f"127.0.0.1:{port}"], "labels": {
            "namespace": cluster.namespace, "pod": pod, "node": nodes[pod], "service": APP}}
        env = json.loads(wait_for(lambda p=pod, i=pid: (markers / f"{p}.{i}.started").exists(), 15,
                                  f"{pod} started marker") and (markers / f"{pod}.{pid}.started").read_text())
        assert env["POD_NAME"] == pod and env["POD_NAMESPACE"] == cluster.namespace
        assert env["NODE_NAME"] == nodes[pod] and env["METRICS_PORT"] == str(port)
        assert env["METRICS_HOST"] == "127.0.0.1" and env["SERVICE"] == "stt"
        assert env["PYTHONPATH"].split(":")[0] == str(REPO)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[0].decode() == sys.executable, "python was not replaced by the venv's interpreter"
        # The worker itself answers on the port the runner handed out.
        own = wait_for(lambda p=port: scrape(p), 10, f"{pod} /metrics")
        assert sample(own, "fake_jobs_total") is not None
        assert (state / "pods" / f"{cluster.namespace}_{pod}.log").exists()

    def usage_ready() -> dict | None:
        samples = scrape(runner.metrics_port)
        cpu = [sample(samples, "container_cpu_usage_seconds_total", pod=p, namespace=cluster.namespace,
                      container="worker", node=nodes[p], source="host-process") for p in procs]
        return samples if all(c is not None and c > 0 for c in cpu) else None

    samples = wait_for(usage_ready, 20, "per-pod CPU readings above zero")
    assert sample(samples, "pod_runner_processes") == 3
    assert sample(samples, "pod_runner_starts_total") == 3
    # The readings are the processes' own: bracketed by /proc read just before and just after a scrape.
    for pod, (pid, _) in procs.items():
        before, rss_before = proc_usage(pid)
        samples = scrape(runner.metrics_port)
        after, rss_after = proc_usage(pid)
        cpu = sample(samples, "container_cpu_usage_seconds_total", pod=pod, source="host-process")
        rss = sample(samples, "container_memory_working_set_bytes", pod=pod, source="host-process")
        assert before - 0.011 <= cpu <= after + 0.011, (before, cpu, after)
        assert 0.8 * min(rss_before, rss_after) <= rss <= 1.2 * max(rss_before, rss_after), (rss_before, rss)
    for node in set(nodes.values()):
        on_node = [p for p in procs if nodes[p] == node]
        pod_cpu = sum(sample(samples, "container_cpu_usage_seconds_total", pod=p) for p in on_node)
        pod_rss = sum(sample(samples, "container_memory_working_set_bytes", pod=p) for p in on_node)
        assert sample(samples, "node_cpu_usage_seconds_total", node=node, source="host-process") == \
            pytest.approx(pod_cpu)
        assert sample(samples, "node_memory_working_set_bytes", node=node, source="host-process") == pod_rss
    assert len(runner.events("start")) == 3


def _scale_down(cluster: Cluster, runner: RunnerProcess, state: Path, markers: Path) -> None:
    before = cluster.annotated(3)
    assert before is not None
    cluster.scale(1)
    after = wait_for(lambda: cluster.annotated(1), 30, "one pod left")
    gone = {pod: pid for pod, (pid, _) in before.items() if pod not in after}
    assert len(gone) == 2
    # SIGTERM, then the job in hand finishes (JOB_S) well inside the grace period, then exit 0.
    for pod, pid in gone.items():
        wait_for(lambda p=pid: not pid_alive(p), GRACE_S + 10, f"{pod} (pid {pid}) to exit")
        assert (markers / f"{pod}.{pid}.graceful").exists(), f"{pod} did not finish its job after SIGTERM"
    wait_for(lambda: set(_targets(state)) == set(after), 10, "file_sd down to one target")
    stops = wait_for(lambda: len(runner.events("stop")) == 2 and runner.events("stop"), 10, "two stop logs")
    assert {s["pod"] for s in stops} == set(gone)
    assert all(s["exit_code"] == 0 and s["reason"] in ("pod-deleted", "pod-terminating") for s in stops)
    assert not runner.events("kill"), "a worker was killed before its grace period ended"
    samples = scrape(runner.metrics_port)
    assert sample(samples, "pod_runner_processes") == 1
    reasons = ("pod-deleted", "pod-terminating")
    assert sum(sample(samples, "pod_runner_stops_total", reason=r) for r in reasons) == 2


def _worker_crash(cluster: Cluster, runner: RunnerProcess, state: Path, markers: Path) -> str:
    ((pod, (pid, port)),) = cluster.annotated(1).items()
    os.kill(pid, signal.SIGKILL)
    restarted = wait_for(lambda: (a := cluster.annotated(1)) and a.get(pod, (pid, 0))[0] != pid and a, 30,
                         "the killed worker to be restarted")
    new_pid, new_port = restarted[pod]
    assert new_port == port, "a restarted worker keeps its port while nothing else took it"
    assert not (markers / f"{pod}.{pid}.graceful").exists()
    wait_for(lambda: (markers / f"{pod}.{new_pid}.started").exists(), 15, "the restarted worker's marker")
    assert sample(scrape(runner.metrics_port), "pod_runner_restarts_total") == 1
    assert set(_targets(state)) == {pod}
    return pod


def _runner_crash(cluster: Cluster, runner: RunnerProcess, kubeconfig: Path, namespace: str, state: Path,
                  markers: Path, pod: str) -> RunnerProcess:
    """A runner killed outright leaves its worker running; the next one stops it and starts its own."""
    ((_, (old_pid, _)),) = cluster.annotated(1).items()
    runner.proc.kill()
    runner.proc.wait(timeout=10)
    assert pid_alive(old_pid), "workers run in their own session and outlive a killed runner"
    # Without its process file, the pod's host-pid annotation alone must lead to the stale worker.
    (state / "processes.json").unlink()
    second = start_runner(kubeconfig, namespace, state)
    stale = [line for line in second.log_lines() if line.get("event") == "stale"]
    assert [s["pid"] for s in stale] == [old_pid], stale
    assert not pid_alive(old_pid)
    assert (markers / f"{pod}.{old_pid}.graceful").exists(), "a stale worker is stopped gracefully"
    fresh = wait_for(lambda: (a := cluster.annotated(1)) and a[pod][0] != old_pid and a, 30,
                     "a fresh worker from the second runner")
    assert second.events("start")[0]["pid"] == fresh[pod][0]
    return second


def _runner_shutdown(cluster: Cluster, runner: RunnerProcess, state: Path, markers: Path) -> None:
    ((pod, (pid, _)),) = cluster.annotated(1).items()
    assert runner.stop(timeout=GRACE_S + 15) == 0
    assert not pid_alive(pid)
    assert (markers / f"{pod}.{pid}.graceful").exists(), "shutdown lets the job in hand finish"
    assert read_file_sd(state / "file_sd.json") == []
    assert all(not pid_alive(int(m.name.split(".")[1])) for m in markers.glob("*.started"))
