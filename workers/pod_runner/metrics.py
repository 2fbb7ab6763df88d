"""The runner's own /metrics: its counters, and real CPU and memory readings of the worker processes.

Per pod, ``container_cpu_usage_seconds_total`` and ``container_memory_working_set_bytes`` carry the
cAdvisor names and labels (namespace, pod, container, node), so prometheus-adapter's resourceRules can
serve metrics.k8s.io from them and the HPA's CPU target works on the local target. They are readings of
host processes standing in for containers, and say so with ``source="host-process"``: CPU is utime+stime
of the worker, its reaped children and its live descendants (psutil reads /proc/<pid>/stat and divides
by CLK_TCK); memory is the RSS of the same processes (a container's working set also counts active page
cache, which a host process has no share of).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from workers.pod_runner.processes import ProcessTable, cpu_seconds

SOURCE = "host-process"
STOP_REASONS = ("pod-deleted", "pod-terminating", "pod-not-running", "pod-replaced", "node-not-simulated",
                "exited", "shutdown")
_POD_LABELS = ["namespace", "pod", "container", "node", "source"]


class RunnerMetrics:
    """Counters the process table reports to, on a registry of their own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._starts = Counter("pod_runner_starts", "Worker processes started for pods (first starts).",
                               registry=registry)
        self._restarts = Counter("pod_runner_restarts",
                                 "Worker processes restarted after exiting while their pod still ran.",
                                 registry=registry)
        self._stops = Counter("pod_runner_stops", "Worker processes stopped, by reason.", ["reason"],
                              registry=registry)
        for reason in STOP_REASONS:
            self._stops.labels(reason)

    def started(self) -> None:
        self._starts.inc()

    def restarted(self) -> None:
        self._restarts.inc()

    def stopped(self, reason: str) -> None:
        self._stops.labels(reason).inc()

    def watch_table(self, table: ProcessTable, nodes: Callable[[], set[str]]) -> None:
        processes = Gauge("pod_runner_processes", "Worker processes alive now (running or stopping).",
                          registry=self.registry)
        processes.set_function(table.count)
        self.registry.register(UsageCollector(table, nodes))


class UsageCollector(Collector):
    """Reads /proc for every live worker at scrape time."""

    def __init__(self, table: ProcessTable, nodes: Callable[[], set[str]]) -> None:
        self._table, self._nodes = table, nodes

    def describe(self) -> list[Metric]:
        return []  # series appear and vanish with pods; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        cpu = CounterMetricFamily("container_cpu_usage_seconds",
                                  "CPU time of the host process standing in for the pod's container.",
                                  labels=_POD_LABELS)
        mem = GaugeMetricFamily("container_memory_working_set_bytes",
                                "RSS of the host process (and descendants) standing in for the container.",
                                labels=_POD_LABELS)
        with self._table.lock:
            node_cpu = dict(self._table.retired_cpu_s)
            workers = self._table.live()
        node_mem: dict[str, float] = {}
        for node in self._nodes():
            node_cpu.setdefault(node, 0.0)
            node_mem.setdefault(node, 0.0)
        for worker in workers:
            reading = read_usage(worker.ps)
            if reading is None:
                continue
            worker.last_cpu_s = max(worker.last_cpu_s, reading[0])
            labels = [worker.key[0], worker.key[1], worker.launch.container, worker.node, SOURCE]
            cpu.add_metric(labels, worker.last_cpu_s)
            mem.add_metric(labels, reading[1])
            node_cpu[worker.node] = node_cpu.get(worker.node, 0.0) + worker.last_cpu_s
            node_mem[worker.node] = node_mem.get(worker.node, 0.0) + reading[1]
        ncpu = CounterMetricFamily("node_cpu_usage_seconds",
                                   "CPU time of all worker host processes placed on the node, ended ones "
                                   "included so the counter never goes back.", labels=["node", "source"])
        nmem = GaugeMetricFamily("node_memory_working_set_bytes",
                                 "RSS of all worker host processes placed on the node.",
                                 labels=["node", "source"])
        for node in sorted(node_cpu):
            ncpu.add_metric([node, SOURCE], node_cpu[node])
            nmem.add_metric([node, SOURCE], node_mem.get(node, 0.0))
        yield from (cpu, mem, ncpu, nmem)


def read_usage(process: psutil.Process | None) -> tuple[float, float] | None:
    """(CPU seconds, RSS bytes) of a process and its live descendants; None once it has gone."""
    if process is None:
        return None
    try:
        members = [process, *process.children(recursive=True)]
        cpu_s = cpu_seconds(process)
        rss = float(process.memory_info().rss)
    except psutil.Error:
        return None
    for child in members[1:]:
        try:
            cpu_s += cpu_seconds(child)
            rss += child.memory_info().rss
        except psutil.Error:
            continue  # exited between the listing and the read
    return cpu_s, rss
