"""The checker's sampling loop: every couple of seconds, HPA status, Deployment replicas, queue depth, cost
and active alerts for each service, with the load stage and the submissions so far.

A read that fails is noted in the sample's ``errors`` and its values are left out (None): a gap in the
timeline, never a made-up zero.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from loadtests.alerts import AlertBook
from loadtests.ledger import LedgerTail
from loadtests.sources import Alertmanager, Kube, Prometheus, SourceError


@dataclass(frozen=True)
class ServiceTarget:
    name: str
    queue: str


class Sampler:
    def __init__(
        self,
        services: list[ServiceTarget],
        kube: Kube,
        prometheus: Prometheus,
        alertmanager: Alertmanager,
        book: AlertBook,
        ledger: LedgerTail,
        interval_s: float = 2.0,
    ) -> None:
        self.services = services
        self.kube, self.prometheus, self.alertmanager = kube, prometheus, alertmanager
        self.book, self.ledger = book, ledger
        self.interval_s = interval_s
        self.samples: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)

    def sample(self) -> dict[str, Any]:
        now = time.time()
        errors: list[str] = []
        services: dict[str, dict[str, Any]] = {s.name: {} for s in self.services}
        for svc in self.services:
            row = services[svc.name]
            try:
                hpa = self.kube.hpa(svc.name)
                row.update(
                    hpa_current=hpa.current_replicas,
                    hpa_desired=hpa.desired_replicas,
                    hpa_min=hpa.min_replicas,
                    hpa_max=hpa.max_replicas,
                    hpa_metrics=hpa.metrics,
                    hpa_time_scale=hpa.time_scale,
                    hpa_last_scale_time=hpa.last_scale_time,
                )
            except SourceError as exc:
                errors.append(str(exc))
            try:
                dep = self.kube.deployment(svc.name)
                row.update(replicas=dep.replicas, ready=dep.ready_replicas, spec_replicas=dep.spec_replicas)
            except SourceError as exc:
                errors.append(str(exc))
        for key, expr, label, by in (
            ("queue_depth", "max by (queue_name) (redis_queue_depth)", "queue_name", "queue"),
            ("cost_per_hour", "sum by (service) (service_cost_per_hour)", "service", "name"),
            ("budget_pct", "max by (service) (budget_utilization_percentage)", "service", "name"),
        ):
            try:
                values = self.prometheus.by_label(expr, label)
            except SourceError as exc:
                errors.append(str(exc))
                continue
            for svc in self.services:
                services[svc.name][key] = values.get(getattr(svc, by))
        try:
            active = self.book.on_poll(self.alertmanager.active_alerts(), now)
        except SourceError as exc:
            errors.append(str(exc))
            active = None
        state = self.ledger.poll()
        stage = state.stage_at(now)
        return {
            "t": round(now, 3),
            "stage": stage["name"] if stage else None,
            "users": stage["users"] if stage else 0,
            "submitted": {s.name: sum(1 for j in state.jobs if j.service == s.name) for s in self.services},
            "services": services,
            "alerts_active": active,
            "errors": errors,
        }

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                sample = self.sample()
            except Exception as exc:  # a bug in one read must not end the run's timeline
                sample = {
                    "t": time.time(),
                    "services": {},
                    "errors": [f"sampler: {type(exc).__name__}: {exc}"],
                }
            with self._lock:
                self.samples.append(sample)
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.samples)

    def latest(self) -> dict[str, Any] | None:
        with self._lock:
            return self.samples[-1] if self.samples else None
