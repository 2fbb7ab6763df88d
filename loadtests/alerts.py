"""Alerts as the checker sees them: notifications delivered to its own webhook receiver (what an on-call
person would get), cross-checked with Alertmanager's list of active alerts polled every sample.

Alertmanager sends every alert to the inventory's ``loadtest-checker`` webhook (``prometheus_stack_alert_webhooks``;
on the local target the real node's bridge address, port 19095, path /alerts); the receiver listens at its
host:port (``harness_loadtest_webhook_listen``) only while a run is going.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Labels that tell one alert of an alertname from another in the timeline (pod-level alerts collapse to
# their service so the plot keeps one row per service).
SPAN_LABELS = ("alertname", "service")


def parse_time(value: str | None) -> float | None:
    """Alertmanager's RFC 3339 time as epoch seconds; None for missing or the zero time."""
    if not value or value.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def span_key(labels: dict[str, str]) -> str:
    parts = [labels.get("alertname", "?")]
    if labels.get("service"):
        parts.append(labels["service"])
    return " / ".join(parts)


@dataclass
class AlertRecord:
    """One alert (Alertmanager fingerprint) seen during the run."""

    fingerprint: str
    labels: dict[str, str]
    starts_at: float | None = None
    firing_received: float | None = None  # first firing notification delivered to our webhook
    resolved_received: float | None = None  # first resolved notification after it fired
    ends_at: float | None = None
    am_first_seen: float | None = None  # first Alertmanager poll that listed it active
    am_last_seen: float | None = None
    am_gone: float | None = None  # first poll that no longer listed it, after it had been listed
    notifications: int = 0

    def fired_at(self, evidence: str) -> float | None:
        return self.firing_received if evidence == "webhook" else self.am_first_seen

    def resolved_at(self, evidence: str) -> float | None:
        return self.resolved_received if evidence == "webhook" else self.am_gone

    def to_json(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "fingerprint",
                "labels",
                "starts_at",
                "firing_received",
                "resolved_received",
                "ends_at",
                "am_first_seen",
                "am_last_seen",
                "am_gone",
                "notifications",
            )
        }


@dataclass
class AlertBook:
    records: dict[str, AlertRecord] = field(default_factory=dict)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, alert: dict[str, Any]) -> AlertRecord:
        labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
        fingerprint = alert.get("fingerprint") or json.dumps(labels, sort_keys=True)
        record = self.records.get(fingerprint)
        if record is None:
            record = self.records[fingerprint] = AlertRecord(fingerprint, labels)
        return record

    def on_webhook(self, payload: dict[str, Any], received: float | None = None) -> None:
        received = received or time.time()
        with self._lock:
            for alert in payload.get("alerts") or []:
                record = self._record(alert)
                record.notifications += 1
                status = alert.get("status")
                self.notifications.append(
                    {
                        "received": received,
                        "status": status,
                        "alertname": record.labels.get("alertname"),
                        "labels": record.labels,
                    }
                )
                if status == "firing":
                    record.starts_at = parse_time(alert.get("startsAt")) or record.starts_at
                    if record.firing_received is None:
                        record.firing_received = received
                    # Firing again after a resolve: a new episode; forget the old resolution.
                    if record.resolved_received is not None:
                        record.resolved_received = record.ends_at = None
                        record.firing_received = received
                elif status == "resolved":
                    record.starts_at = record.starts_at or parse_time(alert.get("startsAt"))
                    record.ends_at = parse_time(alert.get("endsAt")) or received
                    if record.resolved_received is None:
                        record.resolved_received = received

    def on_poll(self, alerts: list[dict[str, Any]], polled: float) -> list[str]:
        """Record Alertmanager's active alerts; returns their span keys for the sample."""
        keys = []
        with self._lock:
            listed = set()
            for alert in alerts:
                record = self._record(alert)
                listed.add(record.fingerprint)
                record.starts_at = record.starts_at or parse_time(alert.get("startsAt"))
                if record.am_first_seen is None or record.am_gone is not None:
                    record.am_first_seen, record.am_gone = polled, None  # (again) active: a new episode
                record.am_last_seen = polled
                keys.append(span_key(record.labels))
            for record in self.records.values():
                if record.am_last_seen is not None and record.am_gone is None and record.fingerprint not in listed:
                    record.am_gone = polled
        return sorted(set(keys))

    def snapshot(self) -> list[AlertRecord]:
        with self._lock:
            return [AlertRecord(**{**r.__dict__, "labels": dict(r.labels)}) for r in self.records.values()]

    def spans(self, run_end: float) -> dict[str, list[tuple[float, float]]]:
        """Firing intervals per span key (alertname / service), merged; one still firing ends at run_end."""
        raw: dict[str, list[tuple[float, float]]] = {}
        for r in self.snapshot():
            start = r.starts_at or r.firing_received or r.am_first_seen
            if start is None:
                continue
            if r.resolved_received is not None:
                end = r.ends_at or r.resolved_received
            elif r.am_last_seen is not None and r.am_last_seen < run_end - 10:
                end = r.am_last_seen  # Alertmanager stopped listing it; no resolve reached the webhook
            else:
                end = run_end
            raw.setdefault(span_key(r.labels), []).append((start, max(start, end)))
        merged: dict[str, list[tuple[float, float]]] = {}
        for key, items in raw.items():
            out: list[tuple[float, float]] = []
            for start, end in sorted(items):
                if out and start <= out[-1][1]:
                    out[-1] = (out[-1][0], max(out[-1][1], end))
                else:
                    out.append((start, end))
            merged[key] = out
        return merged


class WebhookReceiver:
    """Alertmanager's webhook receiver on 127.0.0.1 for the length of a run."""

    def __init__(self, book: AlertBook, host: str, port: int, path: str = "/alerts") -> None:
        self.book = book
        self.path = path
        self.errors: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path.split("?")[0] != receiver.path:
                    self.send_response(404)
                    self.end_headers()
                    return
                try:
                    receiver.book.on_webhook(json.loads(body))
                except (ValueError, TypeError, AttributeError) as exc:
                    receiver.errors.append(f"{type(exc).__name__}: {exc}")
                    self.send_response(400)
                    self.end_headers()
                    return
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="alert-webhook", daemon=True)

    @classmethod
    def start(cls, book: AlertBook, host: str, port: int, wait_s: float = 60.0) -> WebhookReceiver:
        """Bind, waiting up to wait_s for the port (another run or a test may hold it for a while)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                receiver = cls(book, host, port)
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise OSError(
                        f"cannot listen on {host}:{port} for Alertmanager's webhook: {exc}; another "
                        "load test or an alert test holds it. Wait for it to finish, or give "
                        "--webhook-listen a port Alertmanager also sends to"
                    ) from exc
                time.sleep(2)
        receiver.thread.start()
        return receiver

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
