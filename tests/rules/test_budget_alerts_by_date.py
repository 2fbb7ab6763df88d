"""The budget alerts as Prometheus evaluates them on what the real cost exporter publishes, as of a
given date: the exporter is driven through a replica schedule on a set clock (tests/exporters/cost_sim.py),
its series become promtool input series, and promtool evaluates the rules Ansible rendered (fast profile,
as the local target runs them). Also: a service's own budget threshold renders into its own rule."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import yaml

from loadtests import inventory as inventory_facts
from tests.exporters.cost_sim import Simulation

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))

UTC = dt.UTC
WINDOW = 8640.0  # the fast profile's forecast window, as the rendered rules' description says
FIRST = dt.datetime(2026, 12, 1, 0, 30, tzinfo=UTC)


def promtool_case(steps, step_s: int, name: str, checks: list[dict]) -> dict:
    series = []
    for metric in ("budget_utilization_percentage", "budget_forecast_utilization_percentage"):
        for service in ("stt", "tts"):
            values = " ".join(f"{s.figures[metric][service]:.6f}" for s in steps)
            series.append({"series": f'{metric}{{service="{service}"}}', "values": values})
    return {"name": name, "interval": f"{step_s}s", "input_series": series, "alert_rule_test": checks}


def run_promtool(promtool, tmp_path, rendered, cases: list[dict]) -> None:
    rules = tmp_path / "cost-alerts.rules.yml"
    rules.write_text(rendered.path("fast", "cost-alerts.rules.yml").read_text())
    test = tmp_path / "budget-by-date.test.yml"
    test.write_text(
        yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1s", "tests": cases}, sort_keys=False)
    )
    proc = promtool("test", "rules", str(test))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_rendered_window_is_the_one_these_tests_use(rendered):
    rules = rendered.load("fast", "cost-alerts.rules.yml")["groups"][0]["rules"]
    forecast = next(r for r in rules if r["alert"] == "BudgetForecastExceeded")
    assert f"over the last {WINDOW / 3600:g} h" in " ".join(forecast["annotations"]["description"].split())


def test_surge_on_the_1st_fires_neither_budget_alert(tmp_path, rendered, promtool):
    """The default proof's surge (2 -> 8 stt replicas for 60 s, then back) on the 1st of a month: under
    the old rule (projection of the current rate) BudgetThresholdExceeded fired 66 s into the run."""
    sim = Simulation(tmp_path, FIRST - dt.timedelta(seconds=WINDOW), WINDOW)
    sim.run(lambda _t: 2, WINDOW, 180)
    steps = sim.run(lambda t: 8 if 90 <= t < 150 else 2, 300, 2)
    never = [
        {"eval_time": f"{t}s", "alertname": alert, "exp_alerts": []}
        for t in range(0, 301, 10)
        for alert in ("BudgetThresholdExceeded", "BudgetForecastExceeded")
    ]
    run_promtool(promtool, tmp_path, rendered, [promtool_case(steps, 2, "surge on the 1st", never)])


def test_sustained_load_fires_the_forecast_alert_after_the_window_has_moved(tmp_path, rendered, promtool):
    """8 stt replicas held on the 1st against a $1000 budget: the forecast alert fires once the window's
    average has risen enough (well after the start, not at once), the spend alert never."""
    sim = Simulation(tmp_path, FIRST - dt.timedelta(seconds=WINDOW), WINDOW, stt_budget=1000.0)
    sim.run(lambda _t: 2, WINDOW, 180)
    steps = sim.run(lambda _t: 8, WINDOW, 60)
    pct = [s.figures["budget_forecast_utilization_percentage"]["stt"] for s in steps]
    first_over = next(i for i, v in enumerate(pct) if v > 100)
    assert first_over * 60 > 0.5 * WINDOW
    t_fire = (first_over + 1) * 60  # first evaluation after the crossing, then `for: 10s`
    value = pct[first_over + 1]
    checks = [
        {"eval_time": f"{(first_over - 1) * 60}s", "alertname": "BudgetForecastExceeded", "exp_alerts": []},
        {
            "eval_time": f"{t_fire}s",
            "alertname": "BudgetForecastExceeded",
            "exp_alerts": [
                {
                    "exp_labels": {"service": "stt", "severity": "warning", "team": "ml-platform"},
                    "exp_annotations": {
                        "summary": f"stt is forecast to spend {value:.0f}% of its monthly GPU budget",
                        "description": (
                            "Forecast month-end GPU spend of stt (month-to-date + the cost rate averaged over the "
                            f"last {WINDOW / 3600:g} h x hours left in the month) is {value:.1f}% of its monthly "
                            "budget; the threshold is 100%. A burst shorter than the window moves the forecast "
                            "by its share of the window only."
                        ),
                    },
                }
            ],
        },
    ]
    checks += [
        {"eval_time": f"{t}s", "alertname": "BudgetThresholdExceeded", "exp_alerts": []}
        for t in range(0, int(WINDOW) + 1, 600)
    ]
    run_promtool(promtool, tmp_path, rendered, [promtool_case(steps, 60, "sustained on the 1st", checks)])


def test_a_service_threshold_gets_its_own_rule(tmp_path):
    """budget_threshold_percent on a service table entry: that service alerts at its own share, the
    others at the global default. Rendered by Ansible from the local inventory with stt patched."""
    services = {"harness_services": inventory_facts.services(ROOT / "inventories/local", enabled_only=False)}
    services["harness_services"][0]["budget_threshold_percent"] = 50
    (tmp_path / "services.yml").write_text(yaml.safe_dump(services))
    playbook = [
        {
            "name": "Render",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [
                str(ROOT / "roles/harness/defaults/main.yml"),
                str(ROOT / "roles/cost_tracking/defaults/main.yml"),
                str(ROOT / "inventories/local/group_vars/all/platform.yml"),
                str(tmp_path / "services.yml"),
            ],
            "tasks": [
                {
                    "name": "Render the cost rules",
                    "ansible.builtin.template": {
                        "src": str(ROOT / "roles/cost_tracking/templates/cost-alerts.rules.yml.j2"),
                        "dest": str(tmp_path / "rules.yml"),
                        "mode": "0644",
                    },
                }
            ],
        }
    ]
    (tmp_path / "render.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}",
         str(tmp_path / "render.yml")],
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    rules = yaml.safe_load((tmp_path / "rules.yml").read_text())["groups"][0]["rules"]
    exprs = sorted(r["expr"] for r in rules if r["alert"] == "BudgetThresholdExceeded")
    assert exprs == [
        'budget_utilization_percentage{service=~"stt"} >= 50',
        'budget_utilization_percentage{service=~"tts"} >= 80',
    ]
