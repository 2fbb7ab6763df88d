"""The alert rules as Ansible renders them: valid for promtool, each alert firing and not firing in
promtool's unit tests, the fast profile's durations, and the cost exporter config the role renders."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from workers.cost.config import parse_cost_config
from workers.cost.pricing import load_default_prices

COST_ALERTS = {
    "BudgetThresholdExceeded",
    "BudgetForecastExceeded",
    "HighGPUCost",
    "LowGPUUtilization",
    "HighCostPerJob",
    "IdleGPU",
}
SERVICE_ALERTS = {
    "QueueBacklogGrowing",
    "HPAAtMaxReplicas",
    "WorkerDown",
    "JobsFailing",
    "MetricsPipelineDown",
    "ExporterSourceFailing",
}
RULE_FILES = ("cost-alerts.rules.yml", "service-alerts.rules.yml")
PROFILES = ("standard", "fast")  # rendered by the session fixture in conftest.py
HERE = Path(__file__).resolve().parent


def alerts(rendered, profile, name):
    return [r for g in rendered.load(profile, name)["groups"] for r in g["rules"]]


@pytest.mark.parametrize("profile", PROFILES)
def test_rendered_rules_pass_promtool_check(rendered, promtool, profile):
    proc = promtool("check", "rules", *(str(rendered.path(profile, f)) for f in RULE_FILES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_contract_alert_is_defined_with_severity_and_team(rendered):
    cost = alerts(rendered, "standard", "cost-alerts.rules.yml")
    service = alerts(rendered, "standard", "service-alerts.rules.yml")
    assert {r["alert"] for r in cost} == COST_ALERTS
    assert {r["alert"] for r in service} == SERVICE_ALERTS
    for rule in cost + service:
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert rule["labels"]["team"], rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_per_service_rules_come_from_the_enabled_services(rendered):
    service = alerts(rendered, "standard", "service-alerts.rules.yml")
    backlog = sorted(r["labels"]["service"] for r in service if r["alert"] == "QueueBacklogGrowing")
    assert backlog == ["stt", "tts"]  # mt and lipsync ship disabled
    stt = next(r for r in service if r["alert"] == "QueueBacklogGrowing" and r["labels"]["service"] == "stt")
    # 8 replicas x 5 jobs per pod, from the policy table.
    assert 'redis_queue_depth{queue_name="stt"} > 40' in stt["expr"]


def test_thresholds_are_the_design_defaults(rendered):
    exprs = {r["alert"]: r["expr"] for r in alerts(rendered, "standard", "cost-alerts.rules.yml")}
    # Actual spend against the budget, for every enabled service (none sets its own threshold).
    assert exprs["BudgetThresholdExceeded"] == 'budget_utilization_percentage{service=~"stt|tts"} >= 80'
    assert exprs["BudgetForecastExceeded"] == "budget_forecast_utilization_percentage > 100"
    assert exprs["HighGPUCost"].endswith("> 50")
    assert re.search(r"< 30$", exprs["LowGPUUtilization"])
    assert exprs["HighCostPerJob"].endswith("> 0.5")


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("standard", {"BudgetThresholdExceeded": "5m", "LowGPUUtilization": "1h", "WorkerDown": "2m"}),
        ("fast", {"BudgetThresholdExceeded": "0s", "LowGPUUtilization": "30s", "WorkerDown": "10s"}),
    ],
)
def test_profile_sets_the_for_durations(rendered, profile, expected):
    rules = alerts(rendered, profile, "cost-alerts.rules.yml") + alerts(
        rendered, profile, "service-alerts.rules.yml"
    )
    durations = {r["alert"]: r["for"] for r in rules}
    for alert, duration in expected.items():
        assert durations[alert] == duration, alert


def test_promtool_unit_tests_show_each_alert_firing_and_not_firing(rendered, promtool, tmp_path):
    for name in RULE_FILES:
        shutil.copy(rendered.path("standard", name), tmp_path / name)
    tests = sorted(HERE.glob("*.test.yml"))
    covered = set()
    for test in tests:
        shutil.copy(test, tmp_path / test.name)
        spec = yaml.safe_load(test.read_text())
        for case in spec["tests"]:
            for check in case.get("alert_rule_test", []):
                covered.add((check["alertname"], bool(check["exp_alerts"])))
    proc = promtool("test", "rules", *(str(tmp_path / t.name) for t in tests))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for alert in COST_ALERTS | SERVICE_ALERTS:
        assert (alert, True) in covered, f"no test shows {alert} firing"
        assert (alert, False) in covered, f"no test shows {alert} not firing"


def test_cost_exporter_config_from_the_service_table_is_valid(rendered):
    for profile in PROFILES:
        cfg = parse_cost_config(rendered.load(profile, "cost-exporter.yml"), load_default_prices())
        assert [(s.name, s.namespace, s.queue, s.monthly_budget_usd) for s in cfg.services] == [
            ("stt", "model-serving", "stt", 1500.0),
            ("tts", "model-serving", "tts", 1500.0),
        ]
        assert cfg.service_label == "app.kubernetes.io/name"
    assert rendered.load("fast", "cost-exporter.yml")["jobs_rate_window"] == "1m"
    assert rendered.load("standard", "cost-exporter.yml")["jobs_rate_window"] == "5m"
