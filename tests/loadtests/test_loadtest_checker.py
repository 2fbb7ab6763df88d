"""The checker's parts on recorded data: expectations judged from samples, alerts from webhook payloads,
no-loss accounting against a scripted gateway, budget edits on a file, the report, the summary and the PNG."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from loadtests import plot
from loadtests.accounting import JobPoller
from loadtests.alerts import AlertBook
from loadtests.budgets import BudgetEditor, FileStore
from loadtests.expectations import RunFacts, evaluate, percentile
from loadtests.ledger import LedgerTail, LedgerWriter, Submission, read_ledger
from loadtests.report import build_report, summary, write_report
from loadtests.scenario import parse_scenario

T0 = 1_800_000_000.0  # load start
LOAD_END = T0 + 60


def replicas_at(rel: float) -> int:
    """A scale-up to 8 and back: 2 -> 4 at +20 s, 8 at +30 s, 4 at +110 s, 2 at +125 s."""
    if rel < 20:
        return 2
    if rel < 30:
        return 4
    if rel < 110:
        return 8
    return 4 if rel < 125 else 2


def recorded_samples(service_max: int = 8) -> list[dict]:
    samples = []
    for i in range(-5, 90):
        t = T0 + 2 * i
        rel = t - T0
        n = min(replicas_at(rel), service_max)
        depth = max(0.0, min(rel, 60) * 0.8 - max(0, rel - 60) * 1.2) if rel > 0 else 0.0
        row = {
            "ready": n,
            "replicas": n,
            "hpa_desired": n,
            "hpa_current": n,
            "hpa_min": 2,
            "hpa_max": 8,
            "queue_depth": depth,
            "cost_per_hour": 0.21 * n,
            "budget_pct": 2.6 * n,
        }
        samples.append(
            {
                "t": t,
                "stage": "surge" if 0 <= rel < 60 else None,
                "users": 6 if 0 <= rel < 60 else 0,
                "services": {"stt": row, "tts": dict(row, queue_depth=depth / 2)},
                "alerts_active": [],
                "errors": [],
            }
        )
    return samples


def scenario(**expect) -> object:
    raw = {
        "name": "unit",
        "load": {
            "stages": [{"name": "surge", "duration_s": 60, "users": 6, "spawn_rate": 2}],
            "wait_s": [1, 2],
            "mix": {"stt": 1, "tts": 1},
        },
        "expect": expect,
    }
    return parse_scenario(raw, "unit.yml")


def ledger_state(tmp_path: Path):
    path = tmp_path / "jobs.jsonl"
    lines = [
        {"kind": "load_start", "t": T0},
        {"kind": "stage", "t": T0, "name": "surge", "users": 6, "spawn_rate": 2},
    ]
    for i in range(20):
        svc = "stt" if i % 2 else "tts"
        lines.append(
            {
                "kind": "submit",
                "t": T0 + i,
                "service": svc,
                "ok": True,
                "status": 202,
                "latency_ms": 10.0 + i,
                "job_id": f"{svc}-{i:032x}",
            }
        )
    lines.append(
        {
            "kind": "submit",
            "t": T0 + 30,
            "service": "tts",
            "ok": False,
            "status": 429,
            "latency_ms": 3.0,
            "error": "HTTP 429: rate limited",
        }
    )
    lines.append({"kind": "load_stop", "t": LOAD_END})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return read_ledger(path)


class ScriptedGateway:
    """GET /v1/jobs/{id} answers from a script: a list of states per job, one per poll (last one repeats)."""

    def __init__(self, script: dict[str, list[dict]]) -> None:
        self.script = script
        self.calls: dict[str, int] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        job_id = request.url.path.rsplit("/", 1)[-1]
        assert request.headers["X-API-Key"] == "k"
        n = self.calls[job_id] = self.calls.get(job_id, 0) + 1
        states = self.script[job_id]
        body = states[min(n, len(states)) - 1]
        if body.get("status") == 404:
            return httpx.Response(404, json={"error": {"code": "job_not_found", "message": "gone"}})
        service = job_id[:3]
        default = {"text": "turn on the lights"} if service == "stt" else {"audio_seconds": 1.4}
        return httpx.Response(
            200,
            json={
                "id": job_id,
                "service": service,
                "attempts_made": body.get("attempts_made", 1),
                "error": body.get("error"),
                "timings": {"total_s": body.get("total_s")},
                "status": body["status"],
                "result": body.get("result", default),
                "audio_url": f"/v1/jobs/{job_id}/audio" if service == "tts" else None,
            },
        )


def poller(script: dict[str, list[dict]]) -> JobPoller:
    client = httpx.Client(
        base_url="http://gw",
        transport=httpx.MockTransport(ScriptedGateway(script)),
        headers={"X-API-Key": "k"},
    )
    return JobPoller("http://gw", "k", max_rps=1000, client=client)


def accounting_for(state, lost_one: bool = False, failed_one: bool = False):
    script = {}
    for i, job in enumerate(state.jobs):
        script[job.job_id] = [
            {"status": "waiting"},
            {"status": "active"},
            {"status": "completed", "total_s": 5.0 + i},
        ]
    jobs = state.jobs
    if failed_one:
        script[jobs[0].job_id] = [{"status": "failed", "error": "audio could not be decoded"}]
    if lost_one:
        script[jobs[1].job_id] = [{"status": 404}]
    return poller(script).drain(jobs, deadline_s=5, round_pause_s=0)


def facts(tmp_path, scen, samples=None, alerts=None, anchors=None, **kw) -> RunFacts:
    state = ledger_state(tmp_path)
    return RunFacts(
        scen,
        samples if samples is not None else recorded_samples(),
        state,
        kw.get("accounting") or accounting_for(state),
        alerts or [],
        anchors or {"run_start": T0 - 10, "load_start": T0, "load_end": LOAD_END},
        {"stt": 10, "tts": 10},
        {"stt": (2, 8), "tts": (2, 8)},
        T0 + 180,
        0,
    )


def by_name(results):
    return {r.name: r for r in results}


def test_percentile_matches_numpy():
    values = [3.0, 1.0, 7.5, 2.2, 9.9, 4.4, 6.1]
    for q in (50, 90, 95, 99):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 95) is None


def test_scaling_expectations_pass_on_a_good_run(tmp_path):
    scen = scenario(
        scale_up={"stt": {"at_least_replicas": 8, "within_s": 40}},
        back_to_min={"stt": {"within_s": 80}},
        replica_bounds=True,
    )
    results = by_name(evaluate(facts(tmp_path, scen)))
    assert results["scale_up.stt"].passed and results["scale_up.stt"].value == 30.0
    assert results["back_to_min.stt"].passed and results["back_to_min.stt"].value == 66.0  # +126 s - 60 s
    assert results["replica_bounds.stt"].passed
    assert results["load.ran"].passed


def test_failures_name_the_expectation_and_the_observed_value(tmp_path):
    scen = scenario(
        scale_up={
            "stt": {"at_least_replicas": 9, "within_s": 40},
            "tts": {"at_least_replicas": 8, "within_s": 20},
        },
        back_to_min={"stt": {"within_s": 30}},
    )
    results = by_name(evaluate(facts(tmp_path, scen)))
    impossible = results["scale_up.stt"]
    assert not impossible.passed
    assert impossible.observed == "never reached 9: at most 8 ready replicas (HPA desired at most 8, HPA max 8)"
    late = results["scale_up.tts"]
    assert not late.passed and late.value == 30.0 and "8 ready after 30.0 s" in late.observed
    assert not results["back_to_min.stt"].passed and results["back_to_min.stt"].value == 66.0


def test_back_to_min_after_drained_counts_from_the_services_last_job(tmp_path):
    # The recorded run is back at 2 at +126 s, 66 s after load end: too late for 30 s from load end. Its last
    # stt job finished at load end + 40 s; from there it took 26 s, which the policy (and the bound) allows.
    scen = scenario(back_to_min={"stt": {"within_s": 30, "after": "drained"}})
    f = facts(tmp_path, scen)
    for o in f.accounting.outcomes.values():
        o.finished_at = LOAD_END + (40 if o.service == "stt" else 55)
    result = by_name(evaluate(f))["back_to_min.stt"]
    assert result.passed and result.value == 26.0, result
    assert result.expected == "back to the minimum (2) within 30 s of its last job, and staying there"
    # The same run judged from the load end fails: the anchor is what changed.
    f.scenario = scenario(back_to_min={"stt": {"within_s": 30}})
    assert not by_name(evaluate(f))["back_to_min.stt"].passed


def test_back_to_min_after_drained_fails_when_a_job_never_finished(tmp_path):
    scen = scenario(back_to_min={"stt": {"within_s": 500, "after": "drained"}})
    f = facts(tmp_path, scen)
    stt = [o for o in f.accounting.outcomes.values() if o.service == "stt"]
    for o in stt[1:]:
        o.finished_at = LOAD_END + 10
    result = by_name(evaluate(f))["back_to_min.stt"]
    assert not result.passed
    assert result.observed == f"its queue never drained: 1 of its {len(stt)} jobs never finished"


def test_back_to_min_fails_when_the_service_never_settles(tmp_path):
    samples = recorded_samples()
    for s in samples[-10:]:
        s["services"]["stt"].update(ready=3, replicas=3, hpa_desired=3)
    results = by_name(evaluate(facts(tmp_path, scenario(back_to_min={"stt": {"within_s": 500}}), samples)))
    assert not results["back_to_min.stt"].passed
    assert "still at 3 ready replicas (HPA desired 3)" in results["back_to_min.stt"].observed


def test_time_scale_stretches_hpa_bounds(tmp_path):
    scen = scenario(scale_up={"stt": {"at_least_replicas": 8, "within_s": 20}})
    f = facts(tmp_path, scen)
    assert not by_name(evaluate(f))["scale_up.stt"].passed  # 30 s > 20 s at the fast profile's scale
    f.time_scale = {"stt": 1, "tts": 1}  # standard profile: policy periods 10x longer
    result = by_name(evaluate(f))["scale_up.stt"]
    assert result.passed and "within 200 s" in result.expected


def test_job_accounting_counts_every_job(tmp_path):
    state = ledger_state(tmp_path)
    acc = accounting_for(state, lost_one=True, failed_one=True)
    counts = acc.counts()
    assert counts["submitted"] == 20 == counts["completed"] + counts["failed"] + counts["lost"]
    assert (counts["completed"], counts["failed"], counts["lost"]) == (18, 1, 1)
    assert acc.failed()[0]["reason"] == "audio could not be decoded"
    assert "no longer knows" in acc.lost()[0]["reason"]
    results = by_name(
        evaluate(
            facts(
                tmp_path,
                scenario(jobs={"max_lost": 0, "max_failed": 0, "max_submit_errors": 0}),
                accounting=acc,
            )
        )
    )
    assert not results["jobs.lost"].passed and results["jobs.lost"].value == 1
    assert not results["jobs.failed"].passed and "audio could not be decoded" in results["jobs.failed"].observed
    assert not results["jobs.submit_errors"].passed and "HTTP 429" in results["jobs.submit_errors"].observed


def test_a_job_unfinished_at_the_deadline_is_lost_with_its_state(tmp_path):
    state = ledger_state(tmp_path)
    script = {j.job_id: [{"status": "completed", "total_s": 1.0}] for j in state.jobs}
    script[state.jobs[-1].job_id] = [{"status": "active"}]
    acc = poller(script).drain(state.jobs, deadline_s=0.2, round_pause_s=0.05)
    assert acc.timed_out and acc.counts()["lost"] == 1
    assert acc.lost()[0]["reason"] == "still 'active' when the drain deadline passed"


def test_latency_bounds(tmp_path):
    scen = scenario(latency_p95={"gateway_ms": 25, "job_completion_s": {"stt": 100, "tts": 10}})
    results = by_name(evaluate(facts(tmp_path, scen)))
    gateway = results["latency_p95.gateway_ms"]  # 21 answered requests: 3 ms and 10..29 ms
    assert gateway.value == pytest.approx(percentile([3.0, *[10.0 + i for i in range(20)]], 95))
    assert not gateway.passed
    assert results["latency_p95.job_completion_s.stt"].passed
    assert not results["latency_p95.job_completion_s.tts"].passed


def webhook(status: str, alertname: str, service: str, starts: str, ends: str = "0001-01-01T00:00:00Z") -> dict:
    return {
        "status": status,
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": alertname, "service": service},
                "startsAt": starts,
                "endsAt": ends,
                "fingerprint": f"fp-{service}",
            }
        ],
    }


def iso(t: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_alert_fire_and_resolve_from_webhook_notifications(tmp_path):
    book = AlertBook()
    lower, restore = T0 + 10, T0 + 45
    book.on_webhook(webhook("firing", "BudgetThresholdExceeded", "stt", iso(lower + 3)), received=lower + 4)
    book.on_webhook(webhook("firing", "BudgetThresholdExceeded", "stt", iso(lower + 3)), received=lower + 64)
    book.on_webhook(
        webhook("resolved", "BudgetThresholdExceeded", "stt", iso(lower + 3), iso(restore + 5)),
        received=restore + 9,
    )
    book.on_poll(
        [
            {
                "labels": {"alertname": "HighGPUCost", "service": "tts"},
                "fingerprint": "x",
                "startsAt": iso(T0 + 50),
            }
        ],
        polled=T0 + 51,
    )
    raw = {
        "name": "unit",
        "load": {
            "stages": [{"name": "a", "duration_s": 60, "users": 1, "spawn_rate": 1}],
            "wait_s": [1, 2],
            "mix": {"stt": 1, "tts": 1},
        },
        "actions": [
            {"name": "lower", "at_s": 10, "set_monthly_budget_usd": {"stt": 1}},
            {"name": "restore", "at_s": 45, "restore_monthly_budget": ["stt"]},
        ],
        "expect": {
            "alerts_fire": [
                {
                    "alertname": "BudgetThresholdExceeded",
                    "labels": {"service": "stt"},
                    "after": "lower",
                    "within_s": 30,
                    "resolve": {"after": "restore", "within_s": 5},
                }
            ],
            "alerts_not_fire": [
                "HighGPUCost",
                {"alertname": "BudgetThresholdExceeded", "labels": {"service": "tts"}},
            ],
        },
    }
    anchors = {
        "run_start": T0 - 10,
        "load_start": T0,
        "load_end": LOAD_END,
        "lower": lower,
        "restore": restore,
    }
    results = by_name(
        evaluate(facts(tmp_path, parse_scenario(raw, "unit.yml"), alerts=book.snapshot(), anchors=anchors))
    )
    fired = results["alert_fires.BudgetThresholdExceeded{service=stt}"]
    assert fired.passed and fired.value == 4.0
    resolved = results["alert_resolves.BudgetThresholdExceeded{service=stt}"]
    assert not resolved.passed and resolved.value == 9.0 and "9.0 s after restore" in resolved.observed
    forbidden = results["alert_not_fires.HighGPUCost"]
    assert not forbidden.passed and "active in Alertmanager 61 s into the run" in forbidden.observed
    assert results["alert_not_fires.BudgetThresholdExceeded{service=tts}"].passed
    spans = book.spans(T0 + 180)
    assert spans["BudgetThresholdExceeded / stt"] == [(pytest.approx(lower + 3), pytest.approx(restore + 5))]


def test_alert_seen_only_in_alertmanager_is_not_a_delivered_notification(tmp_path):
    book = AlertBook()
    book.on_poll(
        [
            {
                "labels": {"alertname": "HPAAtMaxReplicas", "service": "stt"},
                "fingerprint": "y",
                "startsAt": iso(T0 + 40),
            }
        ],
        polled=T0 + 41,
    )
    scen = scenario(alerts_fire=[{"alertname": "HPAAtMaxReplicas", "within_s": 60}])
    result = by_name(evaluate(facts(tmp_path, scen, alerts=book.snapshot())))["alert_fires.HPAAtMaxReplicas"]
    assert not result.passed and "no notification reached the webhook" in result.observed


def test_budget_edits_are_undone_byte_for_byte(tmp_path):
    config = tmp_path / "cost-exporter.yml"
    original = (
        '---\n# Ansible managed\nservice_label: "app.kubernetes.io/name"\nservices:\n'
        '  - name: "stt"\n    namespace: "model-serving"\n    queue: "stt"\n    monthly_budget_usd: 1500.0\n'
        '  - name: "tts"\n    namespace: "model-serving"\n    queue: "tts"\n    monthly_budget_usd: 900.0\n'
    )
    config.write_text(original)
    editor = BudgetEditor(FileStore(config))
    assert editor.set_budgets({"stt": 1}) == {"stt": 1500.0}
    assert editor.budgets() == {"stt": 1.0, "tts": 900.0}
    assert yaml.safe_load(config.read_text())["services"][0]["namespace"] == "model-serving"
    assert (tmp_path / "cost-exporter.yml.loadtest-backup").read_text() == original
    editor.set_budgets({"tts": 2})
    assert editor.restore_services(("stt",)) == {"stt": 1500.0}
    assert editor.budgets() == {"stt": 1500.0, "tts": 2.0}
    editor.restore_services(("tts",))
    assert config.read_text() == original  # every budget back: the original bytes, not a re-dump
    assert not (tmp_path / "cost-exporter.yml.loadtest-backup").exists()
    with pytest.raises(KeyError, match=r"no service\(s\) \['mt'\]"):
        editor.set_budgets({"mt": 5})


def test_a_backup_left_by_a_crashed_run_is_restored(tmp_path):
    config = tmp_path / "cost.yml"
    config.write_text("services:\n  - {name: stt, namespace: a, queue: stt, monthly_budget_usd: 10}\n")
    BudgetEditor(FileStore(config)).set_budgets({"stt": 1})  # the run dies here: no restore
    assert "monthly_budget_usd: 1.0" in config.read_text()
    fresh = BudgetEditor(FileStore(config))
    assert "interrupted run" in fresh.recover()
    assert fresh.budgets() == {"stt": 10.0}
    assert fresh.recover() is None


def test_ledger_tail_waits_for_complete_lines(tmp_path):
    path = tmp_path / "jobs.jsonl"
    writer = LedgerWriter(path)
    writer.write("load_start")
    writer.write("submit", service="stt", ok=True, status=202, latency_ms=5.0, job_id="stt-" + "a" * 32)
    with path.open("a") as handle:
        handle.write('{"kind": "submit", "t": 1, "serv')
    tail = LedgerTail(path)
    state = tail.poll()
    assert state.load_start is not None and len(state.jobs) == 1
    with path.open("a") as handle:
        handle.write('ice": "tts", "ok": false, "status": 500, "latency_ms": 2, "error": "HTTP 500"}\n')
    state = tail.poll()
    assert [s.ok for s in state.submissions] == [True, False] and state.bad_lines == 0
    assert isinstance(state.submissions[1], Submission) and state.submissions[1].error == "HTTP 500"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_report_summary_and_timeline_from_recorded_samples(tmp_path):
    book = AlertBook()
    book.on_webhook(webhook("firing", "HPAAtMaxReplicas", "stt", iso(T0 + 62)), received=T0 + 63)
    book.on_webhook(webhook("resolved", "HPAAtMaxReplicas", "stt", iso(T0 + 62), iso(T0 + 112)), received=T0 + 115)
    scen = scenario(
        scale_up={"stt": {"at_least_replicas": 9, "within_s": 40}},
        back_to_min={"stt": {"within_s": 80}, "tts": {"within_s": 80}},
        alerts_fire=[
            {
                "alertname": "HPAAtMaxReplicas",
                "labels": {"service": "stt"},
                "within_s": 90,
                "resolve": {"after": "load_end", "within_s": 60},
            }
        ],
    )
    f = facts(tmp_path, scen, alerts=book.snapshot())
    results = evaluate(f)
    target = {"name": "unit-target"}
    report = build_report(f, results, target, T0 - 10, [], str(tmp_path / "timeline.png"), [])
    write_report(report, tmp_path / "report.json")
    loaded = json.loads((tmp_path / "report.json").read_text())
    assert loaded["status"] == "failed" and loaded["failed_expectations"] == ["scale_up.stt"]
    assert loaded["jobs"]["submitted"] == 20 and loaded["jobs"]["lost"] == 0
    assert loaded["jobs"]["submit_errors"] == {"HTTP 429: rate limited": 1}
    assert loaded["scaling"]["stt"]["max_ready_replicas"] == 8
    assert loaded["scaling"]["stt"]["first_scale_up_s"] == 20.0
    assert loaded["scaling"]["stt"]["back_to_min_after_load_s"] == 66.0
    assert loaded["alerts"]["spans"]["HPAAtMaxReplicas / stt"] == [[62.0, 112.0]]
    assert loaded["latency"]["job_completion_s"]["all"]["count"] == 20
    assert len(loaded["samples"]) == len(f.samples)

    text = summary(loaded)
    assert "Load test 'unit': FAILED" in text
    fail_lines = [line for line in text.splitlines() if line.startswith("FAIL")]
    assert len(fail_lines) == 1 and "scale_up.stt" in fail_lines[0] and "never reached 9" in fail_lines[0]
    assert "jobs: submitted 20 = completed 20 + failed 0 + invalid 0 + lost 0" in text

    png = plot.draw(loaded, tmp_path / "timeline.png")
    width, height = png_size(png)
    assert width >= 1200 and height >= 1000
    assert png.stat().st_size > 40_000  # four panels with data, not an empty figure

    # Redrawn later from report.json alone, through the module's command line.
    assert plot.main([str(tmp_path / "report.json"), "-o", str(tmp_path / "again.png")]) == 0
    assert png_size(tmp_path / "again.png") == (width, height)


def test_plot_copes_with_gaps_and_no_alerts(tmp_path):
    samples = recorded_samples()
    for s in samples[10:20]:
        s["services"]["stt"] = {}  # reads failed: a gap, not zeros
    f = facts(tmp_path, scenario(), samples=samples)
    report = build_report(f, evaluate(f), {"name": "t"}, T0 - 10, [], None, [])
    png = plot.draw(json.loads(json.dumps(report, default=str)), tmp_path / "gaps.png")
    assert png_size(png)[0] >= 1200


# ----------------------------------------------------------------------------- the policy judge in a run


def policy_samples(steps: list[tuple[float, int]]) -> list[dict]:
    """Samples every 2 s: a backlog of 100 jobs from +10 s to +50 s, stt's Deployment following ``steps``."""
    out = []
    for i in range(-5, 80):
        t = T0 + 2 * i
        rel = t - T0
        n = [r for s, r in steps if s <= rel][-1]
        depth = 100.0 if 10 <= rel < 50 else 0.0
        row = {"ready": n, "replicas": n, "spec_replicas": n, "hpa_desired": n, "hpa_current": n,
               "hpa_min": 2, "hpa_max": 8, "queue_depth": depth, "hpa_metrics": {"cpu": 10.0}}
        out.append({"t": t, "stage": None, "users": 0, "services": {"stt": row, "tts": dict(row)},
                    "alerts_active": [], "errors": []})
    return out


def policy_facts(tmp_path, steps):
    from loadtests.envelope import other_targets, policy_from_inventory

    f = facts(tmp_path, scenario(policy=["stt"]), samples=policy_samples(steps))
    f.policies = {"stt": policy_from_inventory("stt")}
    f.other_targets = {"stt": other_targets("stt")}
    return f


def test_policy_expectation_holds_for_the_table_policy_and_the_report_says_so(tmp_path):
    f = policy_facts(tmp_path, [(-100, 2), (14, 4), (20, 8), (84, 4), (96, 2)])
    result = by_name(evaluate(f))["policy.stt"]
    assert result.passed, result.observed
    report = build_report(f, evaluate(f), {"name": "unit"}, T0 - 10, [], None, [])
    assert report["scaling"]["stt"]["policy"]["passed"] is True
    assert "stt policy: held" in summary(report)


def test_policy_expectation_names_the_rule_time_and_replicas_of_a_slow_policy(tmp_path):
    # 1 pod per 6 s where the table allows 2 (or 100 %): still passes `at least 8 within 75 s`.
    steps = [(-100, 2), (14, 3), (20, 4), (26, 5), (32, 6), (38, 7), (44, 8), (84, 4), (96, 2)]
    f = policy_facts(tmp_path, steps)
    result = by_name(evaluate(f))["policy.stt"]
    assert not result.passed
    assert result.observed.startswith("scale_up_late at +"), result.observed
    assert "expected >= 4, observed 3" in result.observed
    report = build_report(f, evaluate(f), {"name": "unit"}, T0 - 10, [], None, [])
    assert "policy.stt" in report["failed_expectations"]
    assert report["scaling"]["stt"]["policy"]["rules_broken"] == ["scale_up_late"]
    assert "stt policy: BROKEN scale_up_late" in summary(report)


def test_policy_expectation_is_parsed_and_checked():
    assert scenario(policy=True).expect.policy == ("stt", "tts")
    assert scenario(policy=["tts"]).expect.policy == ("tts",)
    with pytest.raises(ValueError, match=r"expect\.policy"):
        scenario(policy="yes")


def test_retries_per_job_are_reported(tmp_path):
    state = ledger_state(tmp_path)
    script = {j.job_id: [{"status": "completed", "total_s": 2.0}] for j in state.jobs}
    first, second = state.jobs[0].job_id, state.jobs[1].job_id
    script[first] = [{"status": "completed", "total_s": 9.0, "attempts_made": 3}]
    script[second] = [{"status": "failed", "error": "boom", "attempts_made": 2}]
    acc = poller(script).drain(state.jobs, deadline_s=5, round_pause_s=0)
    retries = acc.retries()
    assert retries["jobs_retried"] == 2 and retries["retries"] == 3
    assert retries["jobs_by_attempts"] == {"1": len(state.jobs) - 2, "2": 1, "3": 1}
    assert [j["id"] for j in retries["retried_jobs"]] == [first, second]
    f = facts(tmp_path, scenario(), accounting=acc)
    report = build_report(f, evaluate(f), {"name": "unit"}, T0 - 10, [], None, [])
    assert report["jobs"]["retries"]["retries"] == 3
    assert "retries: 2 job(s) retried, 3 retries in all" in summary(report)


# ------------------------------------------------------------------- the exact ledger, result validation


def test_an_empty_result_is_not_completed(tmp_path):
    state = ledger_state(tmp_path)
    script = {j.job_id: [{"status": "completed", "total_s": 2.0}] for j in state.jobs}
    tts = next(j.job_id for j in state.jobs if j.service == "tts")
    stt = next(j.job_id for j in state.jobs if j.service == "stt")
    script[tts] = [{"status": "completed", "result": {"audio_seconds": 0.0}}]  # a voice that yields no audio
    script[stt] = [{"status": "completed", "result": {"text": "  ", "segments": []}}]
    acc = poller(script).drain(state.jobs, deadline_s=5, round_pause_s=0)
    assert acc.counts()["invalid"] == 2 and acc.counts()["lost"] == 0
    results = by_name(evaluate(facts(tmp_path, scenario(), accounting=acc)))
    assert not results["jobs.invalid"].passed
    assert results["jobs.invalid"].value == 2
    assert "without audio" in acc.invalid()[0]["reason"] + acc.invalid()[1]["reason"]
    assert "without a transcript" in acc.invalid()[0]["reason"] + acc.invalid()[1]["reason"]


def test_unreadable_ledger_lines_fail_the_run(tmp_path):
    f = facts(tmp_path, scenario())
    assert by_name(evaluate(f))["jobs.ledger"].passed
    with (tmp_path / "jobs.jsonl").open("a") as handle:
        handle.write('{"kind": "submit", "t": 1\n')  # cut in the middle of a record
        handle.write("not json at all\n")
    f.ledger = read_ledger(tmp_path / "jobs.jsonl")
    result = by_name(evaluate(f))["jobs.ledger"]
    assert not result.passed and result.value == 2
    assert "not json at all" in result.observed or '"kind": "submit"' in result.observed


def test_requests_cut_off_in_flight_are_counted_against_the_gateway_counter(tmp_path):
    path = tmp_path / "jobs.jsonl"
    writer = LedgerWriter(path)
    writer.write("load_start")
    writer.write("send", service="stt", request_id="a")
    writer.write("submit", service="stt", ok=True, status=202, latency_ms=5, job_id="stt-" + "1" * 32, request_id="a")
    writer.write("send", service="tts", request_id="b")  # the load ended while this one was in flight
    writer.write("load_stop")
    writer.close()
    state = read_ledger(path)
    assert [c["request_id"] for c in state.cut_off()] == ["b"] and len(state.jobs) == 1
    f = facts(tmp_path, scenario())
    f.ledger = state
    for counted, ok in (({"stt": 1, "tts": 0}, True), ({"stt": 1, "tts": 1}, True), ({"stt": 1, "tts": 2}, False),
                        ({"stt": 0, "tts": 0}, False)):
        f.gateway_submitted = counted
        result = by_name(evaluate(f))["jobs.gateway_count"]
        assert result.passed is ok, (counted, result.observed)
    f.gateway_submitted = "Prometheus http://127.0.0.1:19090 does not answer"
    result = by_name(evaluate(f))["jobs.gateway_count"]
    assert not result.passed and "not readable" in result.observed


def test_gateway_counter_delta():
    from loadtests.run import counter_delta

    assert counter_delta({"stt": 3.0}, {"stt": 10.0, "tts": 2.0}) == {"stt": 7.0, "tts": 2.0}
    assert "went down" in counter_delta({"stt": 10.0}, {"stt": 3.0})
    assert counter_delta("no Prometheus", {"stt": 1.0}) == "no Prometheus"
    assert counter_delta(None, {"stt": 1.0}) is None


# --------------------------------------------------------------- the checker never ends without a report


def alert_scenario():
    return scenario(
        alerts_fire=[{"alertname": "HPAAtMaxReplicas", "labels": {"service": "stt"}, "within_s": 30,
                      "resolve": {"after": "load_end", "within_s": 40}}],
        alerts_not_fire=["HighGPUCost"],
    )


def test_a_resolved_only_alert_is_judged_not_a_crash(tmp_path):
    book = AlertBook()
    # Only the resolved notification arrives (it fired before the checker listened).
    book.on_webhook(webhook("resolved", "HighGPUCost", "tts", iso(T0 - 100), iso(T0 + 5)), received=T0 + 6)
    book.on_webhook(webhook("resolved", "HPAAtMaxReplicas", "stt", iso(T0 + 20), iso(T0 + 70)), received=T0 + 71)
    results = by_name(evaluate(facts(tmp_path, alert_scenario(), alerts=book.snapshot())))
    not_fires = results["alert_not_fires.HighGPUCost"]
    assert not not_fires.passed and "a resolved notification (no firing one seen)" in not_fires.observed
    fires = results["alert_fires.HPAAtMaxReplicas{service=stt}"]
    assert not fires.passed and "never fired" in fires.observed
    assert "it never fired" in results["alert_resolves.HPAAtMaxReplicas{service=stt}"].observed


def test_a_busy_webhook_port_fails_the_alert_expectations_with_the_reason(tmp_path):
    from loadtests.alerts import WebhookReceiver

    holder = WebhookReceiver.start(AlertBook(), "127.0.0.1", 0)
    port = holder.server.server_address[1]
    try:
        with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1"):
            WebhookReceiver.start(AlertBook(), "127.0.0.1", port, wait_s=0.5)
    finally:
        holder.stop()
    f = facts(tmp_path, alert_scenario())
    f.webhook_error = f"cannot listen on 127.0.0.1:{port} for Alertmanager's webhook: in use"
    results = by_name(evaluate(f))
    for name in ("alert_fires.HPAAtMaxReplicas{service=stt}", "alert_resolves.HPAAtMaxReplicas{service=stt}"):
        assert not results[name].passed and "no webhook receiver: cannot listen" in results[name].observed
    # What does not need the webhook is still judged.
    assert results["jobs.lost"].passed and results["load.ran"].passed
    assert "Alertmanager's active list only" in results["alert_not_fires.HighGPUCost"].expected


def test_missing_metrics_and_broken_samples_give_failed_expectations_not_a_crash(tmp_path):
    samples = recorded_samples()
    for s in samples:  # no queue depth, no replicas: the metric never reached the checker
        for row in s["services"].values():
            for key in ("ready", "replicas", "spec_replicas", "queue_depth", "hpa_desired"):
                row.pop(key, None)
    f = facts(tmp_path, scenario(scale_up={"stt": {"at_least_replicas": 3, "within_s": 60}},
                                 back_to_min={"stt": {"within_s": 100}}, replica_bounds=True, policy=["stt"]),
              samples=samples)
    from loadtests.envelope import policy_from_inventory

    f.policies = {"stt": policy_from_inventory("stt")}
    results = by_name(evaluate(f))
    assert not results["scale_up.stt"].passed and "no replica samples" in results["scale_up.stt"].observed
    assert not results["replica_bounds.stt"].passed
    assert not results["policy.stt"].passed
    # A sample of the wrong type makes a judge raise: that expectation fails with the reason, the rest stand.
    broken = recorded_samples()
    broken[10]["services"]["stt"]["ready"] = "eight"
    f2 = facts(tmp_path, scenario(scale_up={"stt": {"at_least_replicas": 3, "within_s": 60}}), samples=broken)
    results = by_name(evaluate(f2))
    assert not results["scale_up.stt"].passed
    assert results["scale_up.stt"].observed.startswith("could not be judged: TypeError")
    assert results["jobs.lost"].passed
    report = build_report(f2, evaluate(f2), {"name": "unit"}, T0 - 10, [], None, [])
    assert "scale_up.stt" in report["failed_expectations"]


def test_alert_bounds_stretch_on_the_standard_profile(tmp_path):
    book = AlertBook()
    book.on_webhook(webhook("firing", "HPAAtMaxReplicas", "stt", iso(T0 + 100)), received=T0 + 110)
    book.on_webhook(webhook("resolved", "HPAAtMaxReplicas", "stt", iso(T0 + 100), iso(T0 + 300)),
                    received=T0 + 310)
    fast = facts(tmp_path, alert_scenario(), alerts=book.snapshot())
    results = by_name(evaluate(fast))
    assert not results["alert_fires.HPAAtMaxReplicas{service=stt}"].passed  # 110 s > 30 s on the fast profile
    standard = facts(tmp_path, alert_scenario(), alerts=book.snapshot())
    standard.time_scale = {"stt": 1, "tts": 1}  # the standard profile: HPA periods and alert `for:` x10
    results = by_name(evaluate(standard))
    fires = results["alert_fires.HPAAtMaxReplicas{service=stt}"]
    assert fires.passed and "within 300 s" in fires.expected and "scenario: 30 s" in fires.expected
    resolves = results["alert_resolves.HPAAtMaxReplicas{service=stt}"]
    assert resolves.passed and "within 400 s" in resolves.expected
