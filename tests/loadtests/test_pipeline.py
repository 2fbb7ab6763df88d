"""The dubbing scenario: a pipeline in the mix loads its stages (stt, mt, tts) as the services judged, only where
the target runs it; and the report's stage-by-stage summary (loadtests/pipeline.py) on samples made up for the
test (labelled: simulated queue depths, replicas and cost rates, not a run's)."""

from __future__ import annotations

import copy

import pytest

from loadtests import inventory as inventory_facts
from loadtests.accounting import Accounting, JobOutcome
from loadtests.envelope import policy_from_inventory
from loadtests.expectations import RunFacts
from loadtests.ledger import LedgerState
from loadtests.pipeline import bottlenecks, summary, summary_lines
from loadtests.scenario import PIPELINES, ScenarioError, load_scenario, loadable_services, parse_scenario

TABLE = inventory_facts.services(enabled_only=False)
ALL_ON = [{**s, "enabled": True} for s in TABLE]
DUBBING = loadable_services(ALL_ON, ["dubbing"])


def test_dubbing_is_loadable_only_where_the_target_runs_it_and_every_stage_is_enabled():
    assert "dubbing" in DUBBING
    assert "dubbing" not in loadable_services(ALL_ON)  # the target does not run the orchestrator
    no_mt = [{**s, "enabled": s["name"] != "mt"} for s in TABLE]
    assert "dubbing" not in loadable_services(no_mt, ["dubbing"])
    with pytest.raises(ValueError, match=r"unknown pipeline.*'karaoke'"):
        loadable_services(ALL_ON, ["karaoke"])


def test_the_dubbing_scenario_loads_its_stages_as_the_services_it_judges():
    s = load_scenario("dubbing", DUBBING)
    assert s.kinds == ("dubbing",) and s.pipelines == ("dubbing",)
    assert s.services == tuple(sorted(PIPELINES["dubbing"])) == ("mt", "stt", "tts")
    assert s.expect.policy == ("mt", "stt", "tts")
    assert set(s.expect.back_to_min) == {"stt", "mt", "tts"}
    assert s.expect.latency_p95.job_completion_s == {"dubbing": 300.0}


def test_the_dubbing_scenario_is_refused_where_the_target_does_not_run_the_pipeline():
    with pytest.raises(ScenarioError, match=r"load\.mix\.dubbing: the pipeline 'dubbing' is not run on this target: "
                       r"it needs the orchestrator \(harness_dubbing_enabled: true\) and the services "
                       r"\['stt', 'mt', 'tts'\] enabled"):
        load_scenario("dubbing", loadable_services(ALL_ON))


RAW = {"name": "u", "load": {"stages": [{"name": "a", "duration_s": 5, "users": 1, "spawn_rate": 1}],
                             "wait_s": [1, 2], "mix": {"dubbing": 1}},
       "expect": {"jobs": {"max_lost": 0}}}


@pytest.mark.parametrize("where,value,message", [
    ("scale_up", {"dubbing": {"at_least_replicas": 2, "within_s": 9}},
     r"expect\.scale_up\.dubbing: 'dubbing' is a pipeline, not a service: name its stages \['stt', 'mt', 'tts'\]"),
    ("policy", ["dubbing"], r"expect\.policy: 'dubbing' is a pipeline"),
    ("latency_p95", {"job_completion_s": {"stt": 5, "lipsync": 9}},
     r"job_completion_s: unknown key\(s\) \['lipsync'\]"),
])
def test_a_pipeline_named_where_a_service_belongs_is_refused(where, value, message):
    raw = copy.deepcopy(RAW)
    raw["expect"][where] = value
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(raw, "u.yml", services=DUBBING)


def test_a_stage_of_a_pipeline_gets_load_through_it():
    raw = copy.deepcopy(RAW)
    raw["expect"]["scale_up"] = {"mt": {"at_least_replicas": 3, "within_s": 60}}
    raw["expect"]["latency_p95"] = {"job_completion_s": {"dubbing": 100, "tts": 50}}
    s = parse_scenario(raw, "u.yml", services=DUBBING)
    assert s.expect.scale_up["mt"].at_least_replicas == 3
    assert s.expect.latency_p95.job_completion_s == {"dubbing": 100.0, "tts": 50.0}


# ------------------------------------------------------------------------------ the report (simulated samples)

T0 = 1_000_000.0


def _row(depth, ready, cost):
    return {"queue_depth": depth, "ready": ready, "cost_per_hour": cost}


def test_the_bottleneck_is_the_stage_furthest_behind_its_hpa_target():
    per_pod = {"stt": 5.0, "mt": 10.0, "tts": 5.0}
    samples = [
        (0, {"stt": _row(0, 2, 1), "mt": _row(0, 2, 1), "tts": _row(0, 2, 1)}),
        (2, {"stt": _row(20, 2, 1), "mt": _row(15, 2, 1), "tts": _row(0, 2, 1)}),   # stt 2.0 > mt 0.75
        (4, {"stt": _row(30, 4, 1), "mt": _row(30, 2, 1), "tts": _row(2, 2, 1)}),   # stt 1.5 = mt 1.5: stt first
        (6, {"stt": _row(5, 4, 1), "mt": _row(10, 2, 1), "tts": _row(30, 2, 1)}),   # tts 3.0
        (8, {"stt": _row(0, 4, 1), "mt": _row(0, 2, 1), "tts": _row(12, 3, 1)}),    # tts 0.8
        (10, {"stt": _row(0, 2, 1), "mt": _row(0, 2, 1), "tts": _row(0, 2, 1)}),
    ]
    got = bottlenecks(samples, ("stt", "mt", "tts"), per_pod)
    assert [(i["stage"], i["from_s"], i["to_s"]) for i in got] == [
        ("idle", 0, 0), ("stt", 2, 4), ("tts", 6, 8), ("idle", 10, 10)]
    assert [i["peak"] for i in got] == [0.0, 2.0, 3.0, 0.0]


def test_the_summary_gives_stage_latency_end_to_end_percentiles_and_cost_per_media_minute(tmp_path):
    scenario = load_scenario("dubbing", DUBBING)
    # Every stage at a constant $3.6/h over 100 s from the load start: $0.10 per stage.
    samples = [{"t": T0 + t, "services": {s: _row(4 if t < 50 else 0, 2, 3.6) for s in ("stt", "mt", "tts")}}
               for t in range(0, 101, 10)]
    outcomes = {}
    for i in range(4):
        o = JobOutcome(f"dubbing-{i:032x}", "dubbing", T0 + i, state="completed", total_s=10.0 + 10 * i,
                       media_seconds=15.0)
        o.stages = {"stt": {"jobs": 1, "seconds": 1.0 + i}, "mt": {"jobs": 1, "seconds": 0.5},
                    "tts": {"jobs": 2, "seconds": 2.0}}
        outcomes[o.job_id] = o
    lost = JobOutcome(f"dubbing-{9:032x}", "dubbing", T0 + 9, state="active")
    lost.stages = {"stt": {"jobs": 1, "seconds": None}}
    outcomes[lost.job_id] = lost
    acc = Accounting(outcomes, finished_at=T0 + 100)
    f = RunFacts(scenario, samples, LedgerState(), acc, [], {"load_start": T0, "load_end": T0 + 30}, {}, {},
                 T0 + 120, policies={s: policy_from_inventory(s) for s in ("stt", "mt", "tts")})
    p = summary(f)["dubbing"]
    assert p["jobs"] == {"submitted": 5, "completed": 4}
    assert p["media_minutes"] == 1.0  # 4 x 15 s
    assert p["end_to_end_s"]["p50"] == 25.0 and p["end_to_end_s"]["p95"] == pytest.approx(38.5)
    stt = p["stages"]["stt"]
    assert stt["stage_jobs"] == 5 and stt["latency_s"]["count"] == 4 and stt["latency_s"]["p50"] == 2.5
    assert p["stages"]["tts"]["stage_jobs"] == 8
    assert stt["cost_usd"] == pytest.approx(0.1) and stt["cost_per_media_minute_usd"] == pytest.approx(0.1)
    # Equal pressure in every stage: the first stage of the pipeline is named.
    assert [i["stage"] for i in p["bottleneck"]] == ["stt", "idle"]
    lines = summary_lines({"dubbing": p})
    assert lines[0].startswith("dubbing: 4 of 5 jobs completed, 1.0 media minutes; end to end p50 25.0 s")
    assert "bottleneck: stt 0-40 s" in lines[-1]


def test_the_target_runs_what_the_play_names_an_extra_vars_file_included():
    from loadtests.inventory import DEFAULT_INVENTORY
    from loadtests.run import target_loadable

    enabled = sorted(s["name"] for s in TABLE if s.get("enabled", True) is True)
    # Without --service: the inventory's files (mt is off in the local inventory's table).
    assert sorted(target_loadable(DEFAULT_INVENTORY, [], ["dubbing"])[1]) == [s for s in enabled if s != "lipsync"]
    # loadtest.yml names the services the play has (-e @inventories/extra-vars/local-dubbing.yml turns mt on) and
    # the pipeline.
    _, loadable = target_loadable(DEFAULT_INVENTORY, ["stt:stt", "tts:tts", "mt:mt"], ["dubbing"])
    assert loadable == ("stt", "tts", "mt", "dubbing")
    assert load_scenario("dubbing", loadable).services == ("mt", "stt", "tts")
    assert target_loadable(DEFAULT_INVENTORY, ["stt:stt", "tts:tts"], ["dubbing"])[1] == ("stt", "tts")


def test_the_gateway_count_of_a_pipeline_scenario_is_its_pipelines_jobs(tmp_path):
    """A dubbing scenario submits dubbing jobs: the gateway counts them as service="dubbing" (workers/gateway), not as
    stt, mt or tts (found live: "rose by 0 (mt 0, stt 0, tts 0)" for 71 accepted dubbing jobs)."""
    import re

    from loadtests.expectations import evaluate
    from loadtests.scenario import load_scenario
    from tests.loadtests.test_loadtest_checker import facts

    f = facts(tmp_path, load_scenario("dubbing", ("stt", "mt", "tts", "dubbing")))
    f.gateway_submitted = {}
    accepted = int(re.search(r"counted (\d+) accepted", next(
        r for r in evaluate(f) if r.name == "jobs.gateway_count").expected).group(1))
    assert accepted > 0
    f.gateway_submitted = {"dubbing": float(accepted), "stt": 0.0, "mt": 0.0, "tts": 0.0}
    got = next(r for r in evaluate(f) if r.name == "jobs.gateway_count")
    assert got.passed and f"dubbing {accepted}" in got.observed, got
    f.gateway_submitted = {"dubbing": 0.0, "stt": float(accepted)}
    assert not next(r for r in evaluate(f) if r.name == "jobs.gateway_count").passed
