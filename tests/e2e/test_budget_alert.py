"""BudgetThresholdExceeded reaches an Alertmanager webhook receiver when a budget is lowered below the
month-to-date spend, and resolves when the budget is raised again (real exporter, Prometheus, Alertmanager).

The budget is changed where the cost exporter reads it and the receiver listens where the inventory points
Alertmanager's loadtest-checker webhook (roles/harness: harness_endpoints; prometheus_stack_alert_webhooks): the
cost exporter's ConfigMap (the kubelet refreshes the mounted file within about a minute) and the real node's bridge
address. The change goes through the load test's own BudgetEditor, which keeps a backup of the original until it
is restored."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from loadtests.budgets import BudgetEditor, store_from_spec
from loadtests.sources import Kube
from tests.e2e import stack


class Receiver(ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int]) -> None:
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

        super().__init__(address, Handler)

    def seen(self, status: str, alertname: str, service: str) -> bool:
        return any(s == status and a == alertname and lb.get("service") == service for _, s, a, lb in self.events)


@pytest.fixture
def receiver():
    hook = urlsplit(stack.target()["webhook"])
    assert hook.hostname and hook.port, f"the inventory's loadtest-checker webhook {hook.geturl()!r} has no host:port"
    try:
        server = Receiver((hook.hostname, hook.port))
    except OSError as exc:
        pytest.fail(f"cannot listen on {hook.netloc} for Alertmanager's webhook ({exc}); is a load test running?")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_budget_alert_fires_and_resolves(receiver: Receiver):
    stack.require_stack()
    editor = BudgetEditor(store_from_spec(stack.target()["endpoints"]["cost_config"],
                                          Kube(str(stack.KUBECONFIG), stack.NAMESPACE)))
    recovered = editor.recover()
    if recovered:
        print(recovered)
    spent = stack.wait_for("month-to-date spend for stt",
                           lambda: stack.prom_value('service_cost_month_to_date{service="stt"}'), timeout=60)
    assert spent > 0
    # The exporter sees the change after the kubelet's refresh of the mounted ConfigMap.
    bound = 240
    try:
        editor.set_budgets({"stt": spent / 2})  # actual spend = 200% of the budget
        stack.wait_for("BudgetThresholdExceeded for stt to reach the webhook",
                       lambda: receiver.seen("firing", "BudgetThresholdExceeded", "stt"), timeout=bound)
        assert not receiver.seen("firing", "BudgetThresholdExceeded", "tts"), "tts kept its budget and must not alert"
    finally:
        editor.restore_all()
    stack.wait_for("BudgetThresholdExceeded for stt to resolve at the webhook",
                   lambda: receiver.seen("resolved", "BudgetThresholdExceeded", "stt"), timeout=bound + 60)
    assert stack.prom_value('budget_utilization_percentage{service="stt"}', 0) < 80
