"""BudgetThresholdExceeded reaches an Alertmanager webhook receiver when a budget is lowered below the
month-to-date spend, and resolves when the budget is raised again (real exporter, Prometheus, Alertmanager)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests.e2e import stack

RECEIVER_PORT = 19095  # the webhook the local inventory gives Alertmanager (prometheus_stack_alert_webhooks)


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.events: list[tuple[float, str, str, dict]] = []  # (time, status, alertname, labels)

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                for alert in body.get("alerts", []):
                    outer.events.append((time.time(), alert["status"], alert["labels"].get("alertname", ""),
                                         alert["labels"]))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", RECEIVER_PORT), Handler)

    def seen(self, status: str, alertname: str, service: str) -> bool:
        return any(s == status and a == alertname and lb.get("service") == service for _, s, a, lb in self.events)


@pytest.fixture
def receiver():
    try:
        server = Receiver()
    except OSError as exc:
        pytest.fail(f"cannot listen on 127.0.0.1:{RECEIVER_PORT} for Alertmanager's webhook ({exc}); "
                    "is a load test running?")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_budget_alert_fires_and_resolves(receiver: Receiver):
    config_file = stack.STATE / "cost-exporter.yml"
    original = config_file.read_text()
    spent = stack.wait_for("month-to-date spend for stt",
                           lambda: stack.prom_value('service_cost_month_to_date{service="stt"}'), timeout=60)
    assert spent > 0
    try:
        config = yaml.safe_load(original)
        for svc in config["services"]:
            if svc["name"] == "stt":
                svc["monthly_budget_usd"] = spent / 2  # actual spend = 200% of the budget
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        stack.wait_for("BudgetThresholdExceeded for stt to reach the webhook",
                       lambda: receiver.seen("firing", "BudgetThresholdExceeded", "stt"), timeout=120)
        assert not receiver.seen("firing", "BudgetThresholdExceeded", "tts"), "tts kept its budget and must not alert"
    finally:
        config_file.write_text(original)
    stack.wait_for("BudgetThresholdExceeded for stt to resolve at the webhook",
                   lambda: receiver.seen("resolved", "BudgetThresholdExceeded", "stt"), timeout=180)
    assert stack.prom_value('budget_utilization_percentage{service="stt"}', 0) < 80
