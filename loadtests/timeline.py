"""The reaction timeline: how long each hop of the scaling path took, each timestamped from its own source.

    1 queue_over_threshold   Redis: the checker's own read of BullMQ's lists (waiting + prioritized + paused +
                             active + delayed, the queue exporter's depth) first above the HPA's threshold
    2 prometheus_series      Prometheus: the first raw sample of redis_queue_depth above it (its scrape time,
                             read back after the run with a range selector through the query API)
    3 external_metric        the external metrics API (prometheus-adapter): the first value above it, at the
                             item's own timestamp (the checker polls it)
    4 hpa_desired            HPA status: desiredReplicas above the minimum, at status.lastScaleTime (the
                             SuccessfulRescale event's message gives the size and the reason)
    5 pod_scheduled          the first new pod's PodScheduled condition (lastTransitionTime)
    6 container_started      its containerStatuses[].state.running.startedAt
    7 worker_ready           the worker's own readiness: its /readyz first answering 200, polled through the
                             API server's pod proxy (every target, the kubeconfig only); where that never
                             answered, the pod's Ready condition, which the kubelet sets from the same /readyz
                             (up to the probe's periodSeconds later)
    8 first_job_finished     the job ledger: the earliest finishedOn of a job whose result names that pod

The threshold is the depth at which the HPA must scale up from its minimum: min x queue depth per pod x (1 +
tolerance), from the inventory's policy (the judge's numbers, never the live HPA's). The "new replica" is the
first pod created after the HPA scaled whose worker became ready. Kubernetes timestamps have one-second
resolution (truncated), the checker's polls ``interval_s``; each hop says its resolution.

``ReactionProbe`` records the raw reads during the run (Redis, the external metrics API, the service's pods and
their readiness); ``extract`` turns them, the sampler's HPA rows, the Prometheus samples and the finished jobs
into the timeline. ``extract`` is pure, so the report can be rebuilt from recorded data.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

HOPS = (
    "queue_over_threshold",
    "prometheus_series",
    "external_metric",
    "hpa_desired",
    "pod_scheduled",
    "container_started",
    "worker_ready",
    "first_job_finished",
)
SOURCES = {
    "queue_over_threshold": "Redis (BullMQ lists, read by the checker)",
    "prometheus_series": "Prometheus query API (raw sample, scrape time)",
    "external_metric": "external.metrics.k8s.io (item timestamp)",
    "hpa_desired": "HPA status.lastScaleTime",
    "pod_scheduled": "pod condition PodScheduled",
    "container_started": "pod containerStatuses startedAt",
    "worker_ready": "worker /readyz",
    "first_job_finished": "job ledger (BullMQ finishedOn)",
}
READYZ_FALLBACK_SOURCE = "pod condition Ready (kubelet readiness probe)"


def parse_time(value: Any) -> float | None:
    """An RFC 3339 time from the Kubernetes API (``2026-12-02T01:02:03Z``, ``...03.123456Z``) as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def quantity(value: Any) -> float | None:
    """A Kubernetes quantity from the external metrics API (``12``, ``12500m``) as a float."""
    if value is None:
        return None
    from kubernetes.utils.quantity import parse_quantity

    try:
        return float(parse_quantity(str(value)))
    except (ValueError, TypeError):
        return None


def threshold(min_replicas: int, per_pod: float, tolerance: float) -> float:
    """The metric value above which an HPA at ``min_replicas`` (AverageValue target ``per_pod``) scales up."""
    return min_replicas * per_pod * (1.0 + tolerance)


def pod_record(pod: dict[str, Any]) -> dict[str, Any]:
    """What the timeline needs of one pod (a Kubernetes API object as JSON)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}

    def cond(kind: str) -> float | None:
        c = conditions.get(kind)
        return parse_time(c.get("lastTransitionTime")) if c and c.get("status") == "True" else None

    started = None
    for cs in status.get("containerStatuses") or []:
        running = (cs.get("state") or {}).get("running") or {}
        last = ((cs.get("lastState") or {}).get("terminated") or {}).get("startedAt")
        for value in (last, running.get("startedAt")):
            t = parse_time(value)
            if t is not None and (started is None or t < started):
                started = t
        break  # the first container is the worker
    return {
        "created": parse_time(meta.get("creationTimestamp")),
        "deleted": parse_time(meta.get("deletionTimestamp")),
        "scheduled": cond("PodScheduled"),
        "started": started,
        "ready": cond("Ready"),
        "readyz_port": readyz_port(pod),
    }


def readyz_port(pod: dict[str, Any]) -> int | None:
    """The worker container's port number for /readyz: the one named ``metrics`` (roles/model_services), else the
    first port of the first container (the worker), else None. A number: the API server's pod proxy takes
    ``<pod>:<number>`` only (a port name there fails the request, measured on v1.35.4), unlike the service proxy."""
    containers = (pod.get("spec") or {}).get("containers") or []
    ports = [p for c in containers[:1] for p in c.get("ports") or []]
    named = [p for p in ports if p.get("name") == "metrics"]
    port = (named or ports or [{}])[0].get("containerPort")
    return int(port) if port is not None else None


class ReactionProbe:
    """Polls, every ``interval_s`` until stopped: each queue's depth in Redis, each service's external metric,
    its pods, and the /readyz of its new pods (``readyz(pod)``, through the API server). Reads that fail are
    counted, not fatal."""

    def __init__(
        self,
        services: dict[str, str],  # service -> queue
        depth: Callable[[list[str]], dict[str, float]],
        external: Callable[[str], tuple[float | None, float | None]],  # service -> (value, item time)
        pods: Callable[[str], list[dict[str, Any]]],
        readyz: Callable[[dict[str, Any]], bool],  # a pod (as listed) -> its worker's /readyz answered 200
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.services = services
        self._depth, self._external, self._pods, self._readyz = depth, external, pods, readyz
        self.interval_s, self.clock = interval_s, clock
        self.redis: list[list[Any]] = []
        self.external: list[list[Any]] = []
        self.pods: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in services}
        self.errors: dict[str, int] = {}
        self.last_error: dict[str, str] = {}
        self.started_at = clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reaction-probe", daemon=True)
        self._lock = threading.Lock()

    def _err(self, what: str, exc: Exception) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1
        self.last_error[what] = f"{type(exc).__name__}: {exc}"[:300]

    def poll(self, with_api: bool = True) -> None:
        now = self.clock()
        try:
            depth = self._depth(list(self.services.values()))
            self.redis.append([round(now, 3), {s: depth.get(q) for s, q in self.services.items()}])
        except Exception as exc:
            self._err("redis", exc)
        if not with_api:
            return
        row: dict[str, Any] = {}
        for svc in self.services:
            try:
                value, stamp = self._external(svc)
                row[svc] = [value, stamp]
            except Exception as exc:
                self._err("external_metric", exc)
        if row:
            self.external.append([round(self.clock(), 3), row])
        for svc in self.services:
            try:
                listed = self._pods(svc)
            except Exception as exc:
                self._err("pods", exc)
                continue
            seen = self.clock()
            known = self.pods[svc]
            for pod in listed:
                name = (pod.get("metadata") or {}).get("name")
                if not name:
                    continue
                rec = {**known.get(name, {"first_seen": round(seen, 3)}), **pod_record(pod)}
                prev = known.get(name, {})
                for key in ("started", "scheduled", "ready"):  # keep the earliest: a restart moves them
                    if prev.get(key) is not None and (rec.get(key) is None or prev[key] < rec[key]):
                        rec[key] = prev[key]
                rec["readyz_at"] = prev.get("readyz_at")
                created = rec.get("created")
                if (
                    rec["readyz_at"] is None
                    and rec.get("readyz_port") is not None
                    and rec.get("started") is not None
                    and created is not None
                    and created >= self.started_at - 1
                ):
                    try:
                        if self._readyz(pod):
                            rec["readyz_at"] = round(self.clock(), 3)
                    except Exception as exc:
                        self._err("readyz", exc)
                known[name] = rec

    def _loop(self) -> None:
        i = 0
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.poll(with_api=i % 2 == 0)
            except Exception as exc:
                self._err("probe", exc)
            i += 1
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def record(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "redis": self.redis,
            "external": self.external,
            "pods": self.pods,
            "errors": self.errors,
            "last_error": self.last_error,
        }


def prometheus_points(result: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Raw samples of a range-selector query (Prometheus' ``matrix`` result), the largest value per timestamp
    over the series (a queue may be exported with several label sets)."""
    best: dict[float, float] = {}
    for series in result:
        for ts, value in series.get("values") or []:
            t, v = float(ts), float(value)
            best[t] = max(v, best.get(t, v))
    return sorted(best.items())


def _hop(name: str, t: float | None, resolution_s: float, detail: str, source: str | None = None) -> dict[str, Any]:
    return {
        "hop": name,
        "t": None if t is None else round(t, 3),
        "source": source or SOURCES[name],
        "resolution_s": resolution_s,
        "detail": detail,
    }


def extract(
    service: str,
    limit: float,
    min_replicas: int,
    load_start: float,
    probe: dict[str, Any],
    samples: list[dict[str, Any]],
    prometheus: list[tuple[float, float]] | str | None,
    jobs: list[dict[str, Any]],
    events: list[dict[str, Any]] | None = None,
    scrape_interval_s: float | None = None,
) -> dict[str, Any]:
    """The timeline of ``service``'s first scale-up after ``load_start``.

    ``samples``: the sampler's (``services.<svc>.hpa_desired``, ``hpa_last_scale_time``); ``prometheus``: raw
    (time, value) samples of the queue depth, or why they could not be read; ``jobs``: finished jobs as
    ``{"worker": pod name, "finished_at": epoch s, "state": ...}``; ``events``: the HPA's SuccessfulRescale
    events (``message``, ``firstTimestamp``, ``lastTimestamp``)."""
    interval = float(probe.get("interval_s") or 0.5)
    hops: list[dict[str, Any]] = []
    missing: list[str] = []

    def add(h: dict[str, Any]) -> None:
        hops.append(h)
        if h["t"] is None:
            missing.append(h["hop"])

    # 1. Redis
    t1 = next(
        (
            t
            for t, row in probe.get("redis") or []
            if t >= load_start and row.get(service) is not None and row[service] > limit
        ),
        None,
    )
    depth1 = next((row[service] for t, row in probe.get("redis") or [] if t == t1), None)
    add(
        _hop(
            "queue_over_threshold",
            t1,
            interval,
            f"depth {depth1:g} > {limit:g}" if t1 is not None else f"depth never above {limit:g}",
        )
    )
    after = t1 if t1 is not None else load_start
    # 2. Prometheus: the first raw sample above the limit, from one scrape before the Redis read on (the exporter
    # may have read Redis between two of the checker's polls).
    if isinstance(prometheus, str) or prometheus is None:
        add(_hop("prometheus_series", None, scrape_interval_s or 0, f"not read: {prometheus}"))
    else:
        early = after - (scrape_interval_s or interval)
        t2, v2 = next(((t, v) for t, v in prometheus if t >= max(early, load_start) and v > limit), (None, None))
        add(
            _hop(
                "prometheus_series",
                t2,
                scrape_interval_s or 0,
                f"redis_queue_depth {v2:g}" if t2 is not None else "no sample above the threshold",
            )
        )
    # 3. external metrics API
    t3 = v3 = polled = None
    for t, row in probe.get("external") or []:
        value, stamp = (row.get(service) or [None, None])[:2]
        if t >= load_start and value is not None and value > limit:
            stamp_t = parse_time(stamp)
            t3 = stamp_t if stamp_t is not None and t - 30 <= stamp_t <= t + 1 else t
            v3, polled = value, t
            break
    add(
        _hop(
            "external_metric",
            t3,
            max(1.0, interval * 2),
            f"value {v3:g} (read at +{polled - load_start:.1f} s)"
            if t3 is not None and polled is not None
            else "never above the threshold while polled",
        )
    )
    # 4. HPA desired
    t4 = desired = None
    for s in samples:
        row = (s.get("services") or {}).get(service) or {}
        if s.get("t", 0) >= load_start and (row.get("hpa_desired") or 0) > min_replicas:
            desired = row["hpa_desired"]
            scaled = parse_time(row.get("hpa_last_scale_time"))
            t4 = scaled if scaled is not None and scaled >= load_start - 1 else s["t"]
            break
    reason = ""
    if t4 is not None:
        for ev in events or []:
            times = [parse_time(ev.get(k)) for k in ("firstTimestamp", "lastTimestamp", "eventTime")]
            if any(x is not None and abs(x - t4) <= 1.5 for x in times):
                reason = f"; event: {ev.get('message', '')[:160]}"
                break
    add(
        _hop(
            "hpa_desired",
            t4,
            1.0,
            (f"desired {desired} > min {min_replicas}{reason}" if t4 is not None else "never above the minimum"),
        )
    )
    # 5-8: the first new pod whose worker became ready
    pods = (probe.get("pods") or {}).get(service) or {}
    new = {
        name: p
        for name, p in pods.items()
        if t4 is not None and p.get("created") is not None and p["created"] >= int(t4) - 1
    }

    def ready_at(p: dict[str, Any]) -> tuple[float | None, str]:
        if p.get("readyz_at") is not None:
            return p["readyz_at"], SOURCES["worker_ready"]
        return p.get("ready"), READYZ_FALLBACK_SOURCE

    ranked = sorted(new.items(), key=lambda kv: (ready_at(kv[1])[0] is None, ready_at(kv[1])[0] or 0, kv[0]))
    pod_name, pod = ranked[0] if ranked else (None, None)
    why = "no pod created after the scale-up" if t4 is not None else "no scale-up"
    if pod is None:
        for name in HOPS[4:]:
            add(_hop(name, None, 1.0, why))
    else:
        add(_hop("pod_scheduled", pod.get("scheduled"), 1.0, f"pod {pod_name}"))
        add(_hop("container_started", pod.get("started"), 1.0, f"pod {pod_name}"))
        t7, source7 = ready_at(pod)
        by_readyz = source7 == SOURCES["worker_ready"]
        add(_hop("worker_ready", t7, interval * 2 if by_readyz else 1.0, f"pod {pod_name}", source7))
        finished = sorted(
            j["finished_at"] for j in jobs if j.get("worker") == pod_name and j.get("finished_at") is not None
        )
        add(
            _hop(
                "first_job_finished",
                finished[0] if finished else None,
                0.001,
                f"pod {pod_name}: {len(finished)} job(s) finished" if finished else f"pod {pod_name}: no job",
            )
        )
    prev = None
    for h in hops:
        h["since_load_start_s"] = None if h["t"] is None else round(h["t"] - load_start, 3)
        h["since_previous_s"] = None if h["t"] is None or prev is None else round(h["t"] - prev, 3)
        if h["t"] is not None:
            prev = h["t"]
    first, last = hops[0]["t"], hops[-1]["t"]
    return {
        "service": service,
        "threshold": limit,
        "min_replicas": min_replicas,
        "new_pod": pod_name,
        "new_pods": sorted(new),
        "hops": hops,
        "missing": missing,
        "total_s": None if first is None or last is None else round(last - first, 3),
    }


def summary_lines(timelines: dict[str, Any]) -> list[str]:
    lines = []
    for svc, tl in timelines.items():
        if tl.get("error"):
            lines.append(f"  {svc} reaction: not extracted ({tl['error']})")
            continue
        if tl["hops"][0]["t"] is None:
            lines.append(f"  {svc} reaction: no scale-up to time ({tl['hops'][0]['detail']})")
            continue
        parts = []
        for h in tl["hops"]:
            if h["t"] is None:
                parts.append(f"{h['hop']} -")
            else:
                step = "" if h["since_previous_s"] is None else f" ({round(h['since_previous_s'], 1) + 0.0:+.1f})"
                parts.append(f"{h['hop']} {h['since_load_start_s']:.1f}{step}")
        total = "" if tl["total_s"] is None else f"; queue -> first job on the new pod {tl['total_s']:.1f} s"
        lines.append(f"  {svc} reaction (s from load start): " + " > ".join(parts) + total)
    return lines
