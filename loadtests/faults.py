"""Faults injected during a load run, declared in a scenario's ``faults:`` list.

Kinds:
- ``kill_worker``: SIGKILL one random worker of a service while every worker holds a job (a crash mid-job).
- ``delete_pod``: delete one random pod of a service through the Kubernetes API (graceful, as a drain does).
- ``lower_hpa_max``: patch the service's HPA ``maxReplicas`` down under backlog (a forced scale-in with jobs
  in flight), and put the original back after ``restore_after_s`` (always at the end of the run).
- ``restart_redis``: restart the job store (persistence on: the run refuses a Redis without AOF or RDB).
- ``restart_gateway``: restart the API gateway.

Deleting a pod and patching an HPA are Kubernetes actions, the same on every target. Killing a worker process
and restarting Redis or the gateway go through one small interface, ``Runtime``, named by the inventory
(``harness_loadtest_fault_runtime``). There is one runtime, since the services are pods on every target:
- ``kubernetes``: a worker is killed by exec'ing ``kill -KILL -1`` in its container (the pod shares its PID
  namespace, so the worker is not PID 1, which ignores a SIGKILL from inside), and the kubelet must then report
  the container restarted; Redis and the gateway are restarted by deleting their pods (StatefulSet / Deployment
  bring them back).
(``host``, which signalled the workers' host processes and restarted supervisord programs, went with the
host-process path: it is refused by name.)
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

KINDS = ("kill_worker", "delete_pod", "lower_hpa_max", "restart_redis", "restart_gateway")
SERVICE_KINDS = ("kill_worker", "delete_pod", "lower_hpa_max")
# The fault runtimes there are (harness_loadtest_fault_runtime, --fault-runtime).
RUNTIMES = ("kubernetes",)


class FaultError(RuntimeError):
    """A fault that could not be injected; the message says why."""


@dataclass(frozen=True)
class Fault:
    name: str
    at_s: float
    kind: str
    service: str | None = None
    max_replicas: int | None = None  # lower_hpa_max
    restore_after_s: float | None = None  # lower_hpa_max

    def describe(self) -> str:
        if self.kind == "lower_hpa_max":
            back = f", restored after {self.restore_after_s:g} s" if self.restore_after_s is not None else ""
            return f"{self.service} HPA maxReplicas -> {self.max_replicas}{back}"
        return f"{self.kind} {self.service}" if self.service else self.kind


class Runtime(Protocol):
    """The target-specific faults: how a worker process is killed and how Redis and the gateway restart."""

    name: str

    def kill_worker(self, pod: dict[str, Any]) -> str: ...

    def restart(self, component: str) -> str: ...


def _pod_name(pod: dict[str, Any]) -> str:
    return pod.get("metadata", {}).get("name", "?")


def exec_in_container(core: Any, namespace: str, pod: str, container: str, command: list[str],
                      timeout: float = 15) -> tuple[int | None, str]:
    """Run a command in a container through the API server (pods/exec); its exit code (None when it could not
    start: the message says why) and what it wrote to stdout and stderr."""
    from kubernetes.stream import stream
    from kubernetes.stream.ws_client import ERROR_CHANNEL

    resp = stream(core.connect_get_namespaced_pod_exec, pod, namespace, container=container, command=command,
                  stderr=True, stdout=True, stdin=False, tty=False, _preload_content=False,
                  _request_timeout=timeout)
    try:
        resp.run_forever(timeout=timeout)
        out = (resp.read_stdout() or "") + (resp.read_stderr() or "")
        status = yaml.safe_load(resp.read_channel(ERROR_CHANNEL) or "null") or {}
    finally:
        resp.close()
    if status.get("status") == "Success":
        return 0, out
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", -1)), out
    return None, (status.get("message") or "no exit status (timed out?)") + (f"; {out}" if out else "")


def _restarts(pod: dict[str, Any], container: str) -> tuple[int, dict[str, Any]]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            return int(cs.get("restartCount") or 0), cs
    return 0, {}


class KubernetesRuntime:
    """Every target where the workers are pods: a worker is killed by exec'ing ``kill -KILL -1`` in its container,
    which reaches the worker because its pod shares one PID namespace (roles/model_services sets
    ``shareProcessNamespace``: the pause container is PID 1; a container's own PID 1 ignores a SIGKILL sent from
    inside, so without it the kill did nothing), and then the kubelet must report the container restarted;
    Redis and the gateway are restarted by deleting their pods."""

    name = "kubernetes"
    KILL = ("sh", "-c", "kill -KILL -1")

    def __init__(
        self,
        core: Any,
        namespace: str,
        selectors: dict[str, str] | None = None,
        exec_fn: Callable[..., tuple[int | None, str]] = exec_in_container,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        restart_wait_s: float = 30.0,
    ) -> None:
        self.core, self.namespace = core, namespace
        self.selectors = {
            "redis": "app.kubernetes.io/name=redis",
            "gateway": "app.kubernetes.io/name=gateway",
            **(selectors or {}),
        }
        self._exec, self._clock, self._sleep, self.restart_wait_s = exec_fn, clock, sleep, restart_wait_s

    def _read(self, name: str) -> dict[str, Any]:
        raw = self.core.read_namespaced_pod(name, self.namespace, _request_timeout=5)
        return self.core.api_client.sanitize_for_serialization(raw)

    def kill_worker(self, pod: dict[str, Any]) -> str:
        name = _pod_name(pod)
        container = pod["spec"]["containers"][0]["name"]
        if pod["spec"].get("shareProcessNamespace") is not True:
            raise FaultError(
                f"pod {name}: shareProcessNamespace is not set, so its worker is PID 1 of container {container} and "
                "a SIGKILL from inside it is dropped; the Deployment must share the pod's PID namespace "
                "(roles/model_services' worker template does)")
        before, _ = _restarts(pod, container)
        # The exec's own status is not the evidence: the shell runs in the container it empties, and may be killed
        # with it before it reports (exit 137, or no status). The kubelet's restart of the container is.
        rc, out = self._exec(self.core, self.namespace, name, container, list(self.KILL))
        execd = f"{' '.join(self.KILL)} {'could not run' if rc is None else f'exited {rc}'}"
        deadline = self._clock() + self.restart_wait_s
        while True:
            count, status = _restarts(self._read(name), container)
            if count > before:
                code = ((status.get("lastState") or {}).get("terminated") or {}).get("exitCode")
                return (f"kill -KILL -1 in pod {name} container {container}: it exited {code} and the kubelet "
                        f"restarted it (restartCount {before} -> {count})")
            if self._clock() >= deadline:
                raise FaultError(f"pod {name}: the kubelet reported no restart of container {container} within "
                                 f"{self.restart_wait_s:g} s (restartCount stayed {before}): the worker survived; "
                                 f"{execd}" + (f": {out.strip()[:200]}" if out.strip() else ""))
            self._sleep(0.5)

    def restart(self, component: str) -> str:
        selector = self.selectors[component]
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector, _request_timeout=10).items
        if not pods:
            raise FaultError(f"no pod matches {selector} in {self.namespace}")
        names = [p.metadata.name for p in pods]
        for name in names:
            self.core.delete_namespaced_pod(name, self.namespace, _request_timeout=10)
        return f"deleted pod(s) {names} ({selector}); their controller recreates them"


def check_runtime(kind: str) -> str:
    """``kind`` if it is a fault runtime there is, else a FaultError naming it and what is allowed."""
    if kind in RUNTIMES:
        return kind
    retired = (" (the host runtime went with the retired host-process path: the services are pods on every "
               "target)") if kind == "host" else ""
    raise FaultError(f"fault runtime {kind!r} (harness_loadtest_fault_runtime, --fault-runtime) is invalid: "
                     f"allowed is {' or '.join(RUNTIMES)}{retired}")


def runtime_from_args(kind: str, core: Any, namespace: str, selectors: dict[str, str] | None = None) -> Runtime:
    check_runtime(kind)
    return KubernetesRuntime(core, namespace, selectors)


class Cluster(Protocol):
    """The Kubernetes reads and writes the faults need (loadtests.sources.Kube has them)."""

    def pods(self, service: str) -> list[dict[str, Any]]: ...

    def delete_pod(self, name: str) -> None: ...

    def hpa_max(self, service: str) -> int: ...

    def set_hpa_max(self, service: str, value: int) -> None: ...


class QueueState(Protocol):
    def active(self, queue: str) -> int: ...


def _running(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        p
        for p in pods
        if p.get("status", {}).get("phase") == "Running" and not p.get("metadata", {}).get("deletionTimestamp")
    ]


@dataclass
class FaultRecord:
    """One fault as it was injected: planned and actual time, what it hit, what was done, or why it failed."""

    name: str
    kind: str
    service: str | None
    at_s: float
    t: float | None = None
    target: str | None = None
    detail: str | None = None
    error: str | None = None
    restored_t: float | None = None
    restore_detail: str | None = None
    restore_error: str | None = None

    def to_json(self, load_start: float | None) -> dict[str, Any]:
        out = dict(self.__dict__)

        def rel(t: float | None) -> float | None:
            return None if t is None or load_start is None else round(t - load_start, 1)

        out["at"] = rel(self.t)
        out["restored_at"] = rel(self.restored_t)
        out["late_s"] = None if out["at"] is None else round(out["at"] - self.at_s, 1)
        return out


@dataclass
class Injector:
    """Injects the scenario's faults; every outcome (done or failed) is a FaultRecord."""

    cluster: Cluster
    runtime: Runtime | None
    queues: dict[str, str]  # service -> queue
    queue_state: QueueState | None = None
    rng: random.Random = field(default_factory=random.Random)
    mid_job_wait_s: float = 10.0
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    # Whether a running pod's worker takes jobs (its model loaded): the worker's own /readyz through the API
    # server's pod proxy (sources.Kube.readyz), on every target.
    worker_ready: Callable[[dict[str, Any]], bool] | None = None
    lowered: dict[str, int] = field(default_factory=dict)  # service -> original maxReplicas, until restored
    lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(self, fault: Fault) -> FaultRecord:
        rec = FaultRecord(fault.name, fault.kind, fault.service, fault.at_s)
        try:
            if fault.kind == "kill_worker":
                self._kill_worker(fault, rec)
            elif fault.kind == "delete_pod":
                pod = self._pick(fault.service)
                rec.t, rec.target = self.clock(), _pod_name(pod)
                self.cluster.delete_pod(rec.target)
                rec.detail = f"deleted pod {rec.target} (graceful: the worker finishes or hands back its job)"
            elif fault.kind == "lower_hpa_max":
                assert fault.service is not None and fault.max_replicas is not None
                with self.lock:
                    original = self.lowered.get(fault.service) or self.cluster.hpa_max(fault.service)
                    rec.t, rec.target = self.clock(), f"hpa/{fault.service}"
                    self.cluster.set_hpa_max(fault.service, fault.max_replicas)
                    self.lowered[fault.service] = original
                rec.detail = f"maxReplicas {original} -> {fault.max_replicas}"
            elif fault.kind in ("restart_redis", "restart_gateway"):
                if self.runtime is None:
                    raise FaultError("no fault runtime configured (--fault-runtime)")
                component = fault.kind.removeprefix("restart_")
                rec.t, rec.target = self.clock(), component
                rec.detail = f"{self.runtime.name}: {self.runtime.restart(component)}"
            else:
                raise FaultError(f"unknown fault kind {fault.kind!r}")
        except Exception as exc:  # reported with the fault; the run goes on and fails on it
            rec.error = f"{type(exc).__name__}: {exc}"
            rec.t = rec.t or self.clock()
        return rec

    def _pick(self, service: str | None) -> dict[str, Any]:
        assert service is not None
        pods = _running(self.cluster.pods(service))
        if not pods:
            raise FaultError(f"no running pod of {service}")
        return self.rng.choice(sorted(pods, key=_pod_name))

    def _kill_worker(self, fault: Fault, rec: FaultRecord) -> None:
        """Wait (bounded) until the queue has at least as many active jobs as ready workers, so the one killed
        holds a job (every worker takes one job at a time), then kill a random ready one."""
        if self.runtime is None:
            raise FaultError("no fault runtime configured (--fault-runtime)")
        assert fault.service is not None
        deadline = self.clock() + self.mid_job_wait_s
        while True:
            pods = [p for p in _running(self.cluster.pods(fault.service)) if self._ready(p)]
            active = None if self.queue_state is None else self.queue_state.active(self.queues[fault.service])
            if (pods and (active is None or active >= len(pods))) or self.clock() >= deadline:
                break
            self.sleep(0.25)
        if not pods:
            raise FaultError(f"no running pod of {fault.service} with a ready worker")
        pod = self.rng.choice(sorted(pods, key=_pod_name))
        rec.t, rec.target = self.clock(), _pod_name(pod)
        busy = (
            "active jobs not read"
            if active is None
            else f"{active} active job(s) for {len(pods)} ready worker(s)"
            + ("" if active >= len(pods) else ": not every worker held a job")
        )
        rec.detail = f"{self.runtime.name}: {self.runtime.kill_worker(pod)}; {busy}"

    def _ready(self, pod: dict[str, Any]) -> bool:
        if self.worker_ready is None:
            return True
        try:
            return bool(self.worker_ready(pod))
        except Exception:  # an unanswered readiness check: not a worker to kill mid-job
            return False

    def restore(self, fault: Fault, rec: FaultRecord) -> None:
        """Put a lowered HPA maximum back."""
        with self.lock:
            original = self.lowered.pop(fault.service or "", None)
            if original is None:
                return
            try:
                self.cluster.set_hpa_max(fault.service or "", original)
                rec.restored_t, rec.restore_detail = self.clock(), f"maxReplicas -> {original}"
            except Exception as exc:
                self.lowered[fault.service or ""] = original
                rec.restore_error = f"{type(exc).__name__}: {exc}"

    def restore_all(self) -> list[str]:
        """Every HPA maximum still lowered goes back (end of run, errors, Ctrl-C); what was done."""
        done = []
        with self.lock:
            for service, original in list(self.lowered.items()):
                try:
                    self.cluster.set_hpa_max(service, original)
                    done.append(f"{service} HPA maxReplicas restored to {original}")
                    del self.lowered[service]
                except Exception as exc:
                    done.append(f"COULD NOT restore {service} HPA maxReplicas to {original}: {exc}")
        return done


def schedule(faults: tuple[Fault, ...]) -> list[tuple[float, str, Fault]]:
    """The run's fault events in time order: (seconds from the load start, 'inject' | 'restore', fault)."""
    events = [(f.at_s, "inject", f) for f in faults]
    events += [(f.at_s + f.restore_after_s, "restore", f) for f in faults if f.restore_after_s is not None]
    return sorted(events, key=lambda e: (e[0], e[1] == "inject"))


def run_schedule(
    faults: tuple[Fault, ...],
    injector: Injector,
    load_start: Callable[[], float | None],
    stop: threading.Event,
    records: list[FaultRecord],
    on_event: Callable[[str], None] = lambda _m: None,
    lock: threading.Lock | None = None,
) -> None:
    """Inject and restore at their times from the load start (``load_start()`` is None until it began).

    Each injection runs on a thread of its own, so one that waits (a worker kill waiting for a job in hand, a
    slow restart) does not delay the next; ``records`` is kept in the order of the injection times."""
    lock = lock or threading.Lock()
    pending = schedule(faults)
    by_name: dict[str, FaultRecord] = {}
    threads: dict[str, threading.Thread] = {}

    def inject(fault: Fault, start: float) -> None:
        rec = injector.inject(fault)
        with lock:
            by_name[fault.name] = rec
            records.append(rec)
            records.sort(key=lambda r: r.t or 0)
        on_event(f"fault {fault.name} ({fault.kind}) at +{(rec.t or 0) - start:.1f} s: {rec.error or rec.detail}")

    while pending and not stop.is_set():
        start = load_start()
        if start is None:
            stop.wait(0.25)
            continue
        at, what, fault = pending[0]
        wait = start + at - injector.clock()
        if wait > 0:
            stop.wait(min(wait, 0.25))
            continue
        pending.pop(0)
        if what == "inject":
            threads[fault.name] = threading.Thread(
                target=inject, args=(fault, start), name=f"fault-{fault.name}", daemon=True
            )
            threads[fault.name].start()
            continue
        threads[fault.name].join()
        rec = by_name.get(fault.name)
        if rec is not None:
            injector.restore(fault, rec)
            on_event(
                f"fault {fault.name} restored at +{(rec.restored_t or injector.clock()) - start:.1f} s: "
                f"{rec.restore_error or rec.restore_detail}"
            )
    for thread in threads.values():
        thread.join(timeout=120)
