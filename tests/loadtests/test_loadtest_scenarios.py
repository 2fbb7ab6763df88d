"""Scenario files: every shipped one loads, and mistakes are refused with a message that names the key, the
bad value and what is allowed."""

from __future__ import annotations

import copy

import pytest

from loadtests import inventory as inventory_facts
from loadtests.scenario import (
    PIPELINES,
    SCENARIO_DIR,
    ScenarioError,
    available,
    load_scenario,
    loadable_services,
    parse_scenario,
)

REQUIRED = {"surge", "soak", "budget-breach", "spike-to-max", "scale-to-min", "impossible", "smoke"}

GOOD = {
    "name": "unit",
    "load": {
        "stages": [{"name": "a", "duration_s": 10, "users": 2, "spawn_rate": 1}],
        "wait_s": [1, 2],
        "mix": {"stt": 1, "tts": 1},
    },
    "actions": [{"name": "lower", "at_s": 5, "set_monthly_budget_usd": {"stt": 10}}],
    "expect": {
        "scale_up": {"stt": {"at_least_replicas": 3, "within_s": 60}},
        "back_to_min": {"tts": {"within_s": 100}},
        "alerts_fire": [
            {
                "alertname": "BudgetThresholdExceeded",
                "labels": {"service": "stt"},
                "after": "lower",
                "within_s": 30,
                "resolve": {"after": "load_end", "within_s": 60},
            }
        ],
        "alerts_not_fire": ["HighGPUCost"],
        "jobs": {"max_lost": 0},
        "latency_p95": {"gateway_ms": 500, "job_completion_s": {"stt": 60}},
    },
}


def bad(path: str, value, delete: bool = False) -> dict:
    """GOOD with the key at a dotted path (list indexes as numbers) replaced or deleted."""
    raw = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key = int(last) if isinstance(node, list) else last
    if delete:
        del node[key]
    else:
        node[key] = value
    return raw


def test_every_required_scenario_ships_and_loads():
    assert set(available()) >= REQUIRED
    # Each on what it loads: the local inventory's services, or (dubbing) its table with every service enabled and
    # the pipelines run (inventories/extra-vars/local-dubbing.yml).
    table = [{**s, "enabled": True} for s in inventory_facts.services(enabled_only=False)]
    every = loadable_services(table, list(PIPELINES))
    for name in available():
        scenario = load_scenario(name, every if name in PIPELINES else None)
        assert scenario.name == name, f"{name}.yml says name: {scenario.name}"
        assert scenario.load.duration_s > 0
        assert scenario.description, f"{name} has no description"


def test_good_scenario_parses_with_its_values():
    s = parse_scenario(GOOD, "unit.yml")
    assert s.load.stage_at(0).name == "a" and s.load.stage_at(10.5) is None
    assert s.expect.scale_up["stt"].at_least_replicas == 3
    assert s.expect.alerts_fire[0].match.labels == {"service": "stt"}
    assert s.expect.alerts_fire[0].after == "lower"
    assert s.expect.latency_p95.job_completion_s == {"stt": 60.0}
    assert s.budget_services() == {"stt"}


def test_budget_breach_lowers_then_restores_and_expects_fire_and_resolve():
    s = load_scenario("budget-breach")
    lowered = [a for a in s.actions if a.set_monthly_budget_usd]
    restored = [a for a in s.actions if a.restore_monthly_budget]
    assert lowered and restored and lowered[0].at_s < restored[0].at_s
    fire = [a for a in s.expect.alerts_fire if a.match.alertname == "BudgetThresholdExceeded"]
    assert fire and fire[0].resolve_after == restored[0].name


def test_impossible_scenario_asks_for_more_than_the_policy_max():
    services = inventory_facts.services()
    maxima = {s["name"]: s["hpa"]["max"] for s in services}
    s = load_scenario("impossible")
    assert any(exp.at_least_replicas > maxima[svc] for svc, exp in s.expect.scale_up.items())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            bad("expect.scale_up.stt.at_least", 3),
            "expect.scale_up.stt: unknown key(s) ['at_least']; allowed: ['at_least_replicas', 'within_s']",
        ),
        (
            bad("expect.scale_up.stt.within_s", "soon"),
            "expect.scale_up.stt.within_s: must be a number; got 'soon'",
        ),
        (
            bad("expect.scale_up.stt.within_s", -5),
            "expect.scale_up.stt.within_s: must be greater than 0; got -5",
        ),
        (
            bad("expect.scale_up.stt.at_least_replicas", 2.5),
            "expect.scale_up.stt.at_least_replicas: must be a whole number; got 2.5",
        ),
        (
            bad("expect.scale_up.mt", {"at_least_replicas": 2, "within_s": 5}),
            "expect.scale_up: unknown key(s) ['mt']; allowed: ['stt', 'tts']",
        ),
        (bad("load.mix.ocr", 1), "load.mix: unknown key(s) ['ocr']; allowed: ['stt', 'tts']"),
        (bad("load.mix", {"stt": 0, "tts": 0}), "load.mix: needs at least one service with a weight above 0"),
        (bad("load.wait_s", [3, 1]), "load.wait_s: min 3 is greater than max 1"),
        (bad("load.wait_s", 2), "load.wait_s: must be [min, max] seconds"),
        (bad("load.stages", []), "load.stages: must be a non-empty list of stages; got []"),
        (bad("load.stages.0.users", True), "load.stages[0].users: must be a whole number; got True"),
        (bad("load.stages.0.duration_s", 0), "load.stages[0].duration_s: must be greater than 0; got 0"),
        (
            bad("load.stages.0.spawn_rate", None, delete=True),
            "load.stages[0]: missing required key(s) ['spawn_rate']",
        ),
        (bad("load.stages.0.name", "Ramp Up"), "load.stages[0].name: 'Ramp Up' must match"),
        (
            bad("expect.alerts_fire.0.after", "later"),
            "expect.alerts_fire[0].after: 'later' is not a reference point; "
            "allowed: ['load_start', 'load_end', 'lower']",
        ),
        (
            bad("expect.alerts_fire.0.resolve", {"within": 5}),
            "expect.alerts_fire[0].resolve: unknown key(s) ['within']",
        ),
        (
            bad("expect.alerts_fire.0.labels", ["service=stt"]),
            "expect.alerts_fire[0].labels: must be a mapping of label name to value",
        ),
        (
            bad("expect.alerts_not_fire", ["BudgetThresholdExceeded"]),
            "BudgetThresholdExceeded is also in expect.alerts_fire",
        ),
        (bad("expect.alerts_not_fire", "HighGPUCost"), "expect.alerts_not_fire: must be a list"),
        (bad("expect.jobs.max_lost", -1), "expect.jobs.max_lost: must be at least 0; got -1"),
        (
            bad("expect.latency_p95.p99_ms", 10),
            "expect.latency_p95: unknown key(s) ['p99_ms']; allowed: ['gateway_ms', 'job_completion_s']",
        ),
        (bad("expect.replica_bounds", "yes"), "expect.replica_bounds: must be true or false; got 'yes'"),
        (
            bad("expect.back_to_min.tts.within_s", None, delete=True),
            "expect.back_to_min.tts: missing required key(s) ['within_s']",
        ),
        (
            bad("expect.back_to_min.tts.after", "queue_empty"),
            "expect.back_to_min.tts.after: must be one of ['load_end', 'drained']; got 'queue_empty'",
        ),
        (
            bad("actions.0.set_monthly_budget_usd.stt", 0),
            "actions[0].set_monthly_budget_usd.stt: must be greater than 0; got 0",
        ),
        (bad("actions.0.set_monthly_budget_usd", None, delete=True), "actions[0]: does nothing"),
        (bad("actions.0.name", "load_end"), "actions[0].name: 'load_end' is already used"),
        (
            bad("timeouts", {"drain": 10}),
            "timeouts: unknown key(s) ['drain']; allowed: ['baseline_s', 'drain_s', 'settle_s']",
        ),
        (
            bad("expect.jobs", None, delete=True) | {"expectations": {}},
            "(top level): unknown key(s) ['expectations']",
        ),
        (bad("expect", None, delete=True), "(top level): missing required key(s) ['expect']"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(raw, message):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(raw, "unit.yml")
    text = str(err.value)
    assert text.startswith("unit.yml: "), text
    assert message in text, text


def test_expectation_on_a_service_without_load_is_refused():
    raw = bad("load.mix", {"stt": 1})
    with pytest.raises(ScenarioError, match=r"expect.back_to_min.tts: service 'tts' gets no load"):
        parse_scenario(raw, "unit.yml")


def test_files_by_name_and_path(tmp_path):
    with pytest.raises(ScenarioError, match=r"scenario 'nope' not found: .* available: \[.*'surge'"):
        load_scenario("nope")
    broken = tmp_path / "broken.yml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"broken.yml: not valid YAML"):
        load_scenario(str(broken))
    copy_of_surge = tmp_path / "mine.yml"
    copy_of_surge.write_text((SCENARIO_DIR / "surge.yml").read_text())
    assert load_scenario(str(copy_of_surge)).name == "surge"
