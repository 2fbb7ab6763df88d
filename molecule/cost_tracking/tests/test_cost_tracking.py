"""roles/cost_tracking on the stack: the cost exporter prices each service's running pods with the table's budget,
Prometheus scrapes it and evaluates the cost alerts, and the month's ledger lives on the exporter's volume."""

from __future__ import annotations

import re

from tests.e2e import kube_checks as k
from tests.e2e import stack

SERVICES = stack.SERVICES
# The cost alerts of the documentation (DESIGN.md, roles/cost_tracking/README.md).
COST_ALERTS = {"BudgetForecastExceeded", "BudgetThresholdExceeded", "HighCostPerJob", "HighGPUCost", "IdleGPU",
               "LowGPUUtilization"}


def exported() -> str:
    return k.exporter_text("cost-exporter")


def series(text: str, name: str, service: str) -> float | None:
    m = re.search(rf'(?m)^{name}{{[^}}]*service="{service}"[^}}]*}} (\S+)$', text)
    return float(m.group(1)) if m else None


def test_prometheus_evaluates_the_cost_alerts():
    def loaded():
        groups = stack.http_json(f"{stack.url('prometheus')}/api/v1/rules?type=alert")["data"]["groups"]
        return {r["name"] for g in groups for r in g["rules"]} >= COST_ALERTS or None

    assert stack.wait_for("Prometheus to load the cost alerts", loaded, timeout=120, interval=3)


def test_the_exporter_prices_each_service_with_the_tables_budget():
    text = stack.wait_for("the exporter to price every service", lambda: (
        t if all((series(t, "service_cost_per_hour", s) or 0) > 0 for s in SERVICES) else None)
        if (t := exported()) else None, timeout=120, interval=3)
    for name, svc in SERVICES.items():
        assert series(text, "service_monthly_budget", name) == float(svc["monthly_budget_usd"]), name


def test_prometheus_has_scraped_the_cost_series():
    counted = stack.wait_for("count(service_cost_per_hour > 0) in Prometheus", lambda: stack.prom_value(
        "count(service_cost_per_hour > 0)"), timeout=60, interval=2)
    assert int(counted) == len(SERVICES)


def test_the_ledger_is_on_the_exporters_volume():
    pod = [p for p in k.pods("app.kubernetes.io/name=cost-exporter") if k.ready(p)]
    assert len(pod) == 1, [p.metadata.name for p in pod]
    volumes = {v.name: v for v in pod[0].spec.volumes}
    assert volumes["state"].persistent_volume_claim.claim_name == "cost-exporter-state"
    rc, out = k.exec_in(pod[0].metadata.name, ["sh", "-c", 'test -s "$COST_EXPORTER_STATE_FILE" && echo present'])
    assert (rc, out.strip()) == (0, "present"), out
