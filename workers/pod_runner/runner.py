"""The reconcile loop: desired = Running pods on simulated nodes, actual = the process table.

Watch events wake the loop at once; otherwise it ticks every half second, which is also how often it
reaps exits, starts due restarts and enforces grace periods. Node labels are re-read every resync.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from kubernetes.client import V1Pod

from workers.pod_runner import stale
from workers.pod_runner.config import RunnerConfig
from workers.pod_runner.file_sd import FileSdWriter, Target
from workers.pod_runner.kube import KubeAccess, PodCache, PodKey, PodWatcher
from workers.pod_runner.podspec import Launch, LaunchError, build_launch, grace_seconds
from workers.pod_runner.processes import RUNNING, ProcessTable, Worker

log = logging.getLogger("workers.pod_runner")

TICK_S = 0.5
_SHUTDOWN_SLACK_S = 5.0


class PodRunner:
    def __init__(self, config: RunnerConfig, kube: KubeAccess, table: ProcessTable) -> None:
        self.config, self.kube, self.table = config, kube, table
        self.cache = PodCache(config.namespaces)
        self.file_sd = FileSdWriter(config.file_sd_path)
        self.inherited = {name: os.environ[name] for name in config.pass_env if name in os.environ}
        self.nodes: set[str] = set()
        self.stop = threading.Event()
        self.signals = 0
        self.last_tick = time.monotonic()
        self._nodes_at = 0.0
        self._recorded: list[stale.Recorded] | None = None
        self._launch_errors: dict[PodKey, tuple[str, str, float]] = {}  # key -> (uid, message, retry at)

    # -- start and stop -----------------------------------------------------------------------------
    def clean_stale(self) -> None:
        """Stop what an earlier run left behind; the pods get fresh processes from this run."""
        records = stale.load(self.config.process_file)
        for ns in self.config.namespaces:
            try:
                pods, _ = self.kube.list_pods(ns, self.config.label_selector)
            except Exception as exc:  # the process file still names what this runner started
                log.warning("cannot list pods to find stale workers",
                            extra={"namespace": ns, "error": repr(exc)})
                continue
            records.extend(r for r in map(self._annotated_record, pods) if r is not None)
        count = stale.terminate(records)
        if count:
            log.warning("stale workers from an earlier run terminated", extra={"count": count})
        stale.save(self.config.process_file, [])

    def _annotated_record(self, pod: V1Pod) -> stale.Recorded | None:
        annotations = pod.metadata.annotations or {}
        pid, url = annotations.get(stale.PID_ANNOTATION), annotations.get(stale.METRICS_URL_ANNOTATION, "")
        port = url.rsplit(":", 1)[-1].split("/", 1)[0]
        if not (pid and pid.isdigit() and port.isdigit()):
            return None
        try:
            launch = build_launch(pod, self.kube, self.config.workdir, int(port), self.inherited)
        except LaunchError:
            return None  # its command line cannot be rebuilt, so a match cannot be proven
        return stale.Recorded(pid=int(pid), create_time=None, argv=launch.argv,
                              namespace=pod.metadata.namespace, pod=pod.metadata.name, grace_s=launch.grace_s)

    def request_stop(self) -> None:
        self.signals += 1
        self.stop.set()
        if self.signals > 1:
            log.warning("second stop signal: killing workers now", extra={"event": "kill"})

    def run(self) -> int:
        for ns in self.config.namespaces:
            PodWatcher(self.kube, self.cache, ns, self.config.label_selector, self.config.resync_s,
                       self.stop).start()
        log.info("pod runner started", extra={"namespaces": list(self.config.namespaces),
                                              "label_selector": self.config.label_selector,
                                              "node_selector": self.config.node_selector,
                                              "file_sd": str(self.config.file_sd_path)})
        while not self.stop.is_set():
            self.cache.changed.wait(TICK_S)
            self.cache.changed.clear()
            self.last_tick = time.monotonic()
            if self.stop.is_set():
                break
            try:
                self.tick()
            except Exception:  # one bad pass (an API error mid-way) must not end supervision
                log.exception("reconcile pass failed")
        return self.shutdown()

    def shutdown(self) -> int:
        self.table.stop_all("shutdown")
        live = self.table.live()
        deadline = max((w.kill_at for w in live), default=time.monotonic()) + _SHUTDOWN_SLACK_S
        while self.table.live() and time.monotonic() < deadline:
            if self.signals > 1:
                self.table.kill_all()
            self.table.poll()
            self.last_tick = time.monotonic()
            time.sleep(0.1)
        left = self.table.live()
        self._publish()
        log.info("pod runner stopped", extra={"left_running": [w.pid for w in left]})
        return 0 if not left else 1

    # -- one reconcile pass -------------------------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._nodes_at:
            try:
                self.nodes = self.kube.node_names(self.config.node_selector)
            except Exception as exc:  # keep the last known nodes while the API server is away
                log.warning("cannot list nodes", extra={"error": repr(exc)})
            self._nodes_at = now + self.config.resync_s
        self.table.poll()
        if not self.cache.synced:
            return
        pods = self.cache.snapshot()
        for key in self._launch_errors.keys() - pods.keys():
            del self._launch_errors[key]
        for key, worker in list(self.table.workers.items()):
            pod = pods.get(key)
            if pod is None:
                self.table.stop(key, "pod-deleted")
            elif pod.metadata.uid != worker.uid:
                self.table.stop(key, "pod-replaced")
            elif reason := self.unwanted(pod):
                self.table.stop(key, reason, grace_seconds(pod))
        for key, pod in pods.items():
            if key not in self.table.workers and self.unwanted(pod) is None:
                self._start(key, pod)
        for worker in self.table.due_restarts():
            pod = pods.get(worker.key)
            if pod is not None:
                self._restart(worker, pod)
        for worker in self.table.live():
            if worker.state == RUNNING and worker.annotated_pid != worker.pid:
                self._annotate(worker)
        self._publish()

    def unwanted(self, pod: V1Pod) -> str | None:
        """Why the pod should have no process, or None when it should have one."""
        if pod.metadata.deletion_timestamp is not None:
            return "pod-terminating"
        if (pod.status.phase if pod.status else None) != "Running":
            return "pod-not-running"
        if pod.spec.node_name not in self.nodes:
            return "node-not-simulated"
        return None

    def _launch(self, key: PodKey, pod: V1Pod, port: int) -> Launch | None:
        uid = pod.metadata.uid
        previous = self._launch_errors.get(key)
        if previous and previous[0] == uid and time.monotonic() < previous[2]:
            return None  # failed lately; try again after a resync period, not every tick
        try:
            launch = build_launch(pod, self.kube, self.config.workdir, port, self.inherited)
        except LaunchError as exc:
            self._launch_failed(key, uid, str(exc))
            return None
        self._launch_errors.pop(key, None)
        return launch

    def _launch_failed(self, key: PodKey, uid: str, reason: str) -> None:
        previous = self._launch_errors.get(key)
        if previous is None or previous[:2] != (uid, reason):
            log.error("cannot start a worker for the pod",
                      extra={"event": "launch-error", "namespace": key[0], "pod": key[1], "reason": reason})
        self._launch_errors[key] = (uid, reason, time.monotonic() + self.config.resync_s)

    def _start(self, key: PodKey, pod: V1Pod) -> None:
        try:
            port = self.table.ports.allocate()
        except RuntimeError as exc:
            self._launch_failed(key, pod.metadata.uid, str(exc))
            return
        launch = self._launch(key, pod, port)
        if launch is None:
            self.table.ports.release(port)
            return
        self.table.start(key, pod.metadata.uid, pod.spec.node_name, port, launch)

    def _restart(self, worker: Worker, pod: V1Pod) -> None:
        port = worker.port
        if not self.table.ports.is_free(port):  # something else took it while the worker was down
            try:
                port = self.table.ports.allocate()
            except RuntimeError as exc:
                self._launch_failed(worker.key, worker.uid, str(exc))
                return
            self.table.ports.release(worker.port)
            worker.port = port
        launch = self._launch(worker.key, pod, port)
        if launch is not None:
            self.table.restart(worker, launch, port)

    def _annotate(self, worker: Worker) -> None:
        if time.monotonic() < worker.annotate_retry_at:
            return
        annotations = {stale.METRICS_URL_ANNOTATION: f"http://127.0.0.1:{worker.port}/metrics",
                       stale.PID_ANNOTATION: str(worker.pid)}
        try:
            if self.kube.patch_annotations(worker.key[0], worker.key[1], annotations):
                worker.annotated_pid = worker.pid
        except Exception as exc:
            worker.annotate_retry_at = time.monotonic() + self.config.resync_s
            log.warning("cannot annotate the pod", extra=worker.fields(error=repr(exc)))

    def _publish(self) -> None:
        """file_sd for Prometheus (running workers only) and the process file for the next run."""
        running = [w for w in self.table.live() if w.state == RUNNING]
        self.file_sd.write([Target(w.port, w.key[0], w.key[1], w.node, w.launch.service) for w in running])
        records = [stale.Recorded(pid=w.pid, create_time=w.ps.create_time() if w.ps else None,
                                  argv=w.launch.argv, namespace=w.key[0], pod=w.key[1],
                                  grace_s=w.launch.grace_s)
                   for w in self.table.live() if w.pid is not None]
        if records != self._recorded:
            stale.save(self.config.process_file, records)
            self._recorded = records
