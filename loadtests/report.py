"""report.json and the terminal summary of a run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from loadtests import pipeline, queueaudit, timeline
from loadtests.expectations import Result, RunFacts, back_to_min_time, latency_summary, policy_verdict

REPORT_VERSION = 1


def scaling_summary(f: RunFacts) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for svc in f.scenario.services:
        try:
            out.update(_scaling_one(f, svc))
        except Exception as exc:  # bad samples: the report says so and is written all the same
            out[svc] = {"error": f"{type(exc).__name__}: {exc}", "policy": None}
    return out


def _scaling_one(f: RunFacts, svc: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    start, end = f.anchors.get("load_start"), f.anchors.get("load_end")
    # From the load start on: what happened while the target settled into its baseline is not this run's.
    rows = [
        (s["t"], s["services"][svc])
        for s in f.samples
        if svc in s.get("services", {}) and start is not None and s["t"] >= start
    ]
    low, high = f.hpa_bounds.get(svc, (None, None))
    ready = [r.get("ready") for _, r in rows if r.get("ready") is not None]
    desired = [r.get("hpa_desired") for _, r in rows if r.get("hpa_desired") is not None]
    depth = [r.get("queue_depth") for _, r in rows if r.get("queue_depth") is not None]
    cost = [r.get("cost_per_hour") for _, r in rows if r.get("cost_per_hour") is not None]
    first_up = next(
        (t - start for t, r in rows if low is not None and (r.get("hpa_desired") or 0) > low),
        None,
    )
    peak = max(ready) if ready else None
    peak_at = next((t - start for t, r in rows if r.get("ready") == peak), None)
    settled = back_to_min_time(f.samples, svc, low, end) if end is not None and low is not None else None
    out[svc] = {
        "hpa_min": low,
        "hpa_max": high,
        "time_scale": f.time_scale.get(svc),
        "max_ready_replicas": peak,
        "max_desired_replicas": max(desired) if desired else None,
        "first_scale_up_s": None if first_up is None else round(first_up, 1),
        "max_reached_after_s": None if peak_at is None else round(peak_at, 1),
        "back_to_min_after_load_s": None if settled is None else round(max(0.0, settled - end), 1),
        "max_queue_depth": max(depth) if depth else None,
        "max_cost_per_hour_usd": round(max(cost), 4) if cost else None,
    }
    # The inventory policy's verdict for every service, also where the scenario does not expect it.
    try:
        verdict = policy_verdict(f, svc)
        out[svc]["policy"] = None if verdict is None else verdict.to_json()
    except Exception as exc:  # the report is written whatever the judge does
        out[svc]["policy"] = {"passed": False, "error": f"{type(exc).__name__}: {exc}", "rules_broken": [],
                              "findings": [], "envelope": []}
    return out


def build_report(
    f: RunFacts,
    results: list[Result],
    target: dict[str, Any],
    started: float,
    actions: list[dict[str, Any]],
    png: str | None,
    notes: list[str],
) -> dict[str, Any]:
    passed = all(r.passed for r in results)
    submissions = f.ledger.submissions
    completed = [] if f.accounting is None else [o for o in f.accounting.outcomes.values() if o.state == "completed"]
    services = sorted({s.service for s in submissions})
    errors: dict[str, int] = {}
    for s in submissions:
        if not s.ok:
            errors[s.error or f"HTTP {s.status}"] = errors.get(s.error or f"HTTP {s.status}", 0) + 1
    jobs: dict[str, Any] = {"submitted": 0, "completed": 0, "failed": 0, "invalid": 0, "lost": 0, "by_service": {}}
    if f.accounting is not None:
        jobs = {
            **f.accounting.counts(),
            "failed_jobs": f.accounting.failed(),
            "lost_jobs": f.accounting.lost(),
            "retries": f.accounting.retries(),
            "invalid_jobs": f.accounting.invalid(),
            "drain_timed_out": f.accounting.timed_out,
            "poll_errors": f.accounting.poll_errors,
        }
    jobs["submit_requests"] = len(submissions)
    jobs["cut_off"] = f.ledger.cut_off()
    jobs["ledger_bad_lines"] = f.ledger.bad_lines
    jobs["gateway_submitted"] = f.gateway_submitted
    jobs["submit_errors"] = errors
    load_start = f.anchors.get("load_start") or started
    return {
        "report_version": REPORT_VERSION,
        "scenario": {
            "name": f.scenario.name,
            "description": f.scenario.description,
            "file": str(f.scenario.path),
            "load_duration_s": f.scenario.load.duration_s,
            "stages": [s.__dict__ for s in f.scenario.load.stages],
            "written_for_time_scale": f.scenario.written_for_time_scale,
        },
        "status": "passed" if passed else "failed",
        "passed": passed,
        "started_at": _iso(started),
        "finished_at": _iso(f.run_end),
        "duration_s": round(f.run_end - started, 1),
        # From the load start to the end of the run (the baseline wait before it is not the scenario's).
        "scenario_duration_s": None
        if f.anchors.get("load_start") is None
        else round(f.run_end - f.anchors["load_start"], 1),
        "load": {
            "start": f.anchors.get("load_start"),
            "end": f.anchors.get("load_end"),
            "locust_exit_code": f.locust_rc,
            "stages_run": f.ledger.stages,
        },
        "target": target,
        "expectations": [r.to_json() for r in results],
        "failed_expectations": [r.name for r in results if not r.passed],
        "jobs": jobs,
        "latency": {
            "gateway_submit_ms": {
                svc: latency_summary([s.latency_ms for s in submissions if s.service == svc and s.status])
                for svc in services
            }
            | {"all": latency_summary([s.latency_ms for s in submissions if s.status])},
            "job_completion_s": {
                svc: latency_summary([o.total_s for o in completed if o.service == svc and o.total_s is not None])
                for svc in services
            }
            | {"all": latency_summary([o.total_s for o in completed if o.total_s is not None])},
            "job_queue_wait_s": {
                "all": latency_summary([o.queue_wait_s for o in completed if o.queue_wait_s is not None])
            },
        },
        "scaling": scaling_summary(f),
        # A pipeline scenario (dubbing) stage by stage: loadtests/pipeline.py.
        "pipelines": pipeline.summary(f),
        "actions": actions,
        "alerts": {
            "expected_to_fire": sorted({a.match.alertname for a in f.scenario.expect.alerts_fire}),
            "forbidden": sorted({m.alertname for m in f.scenario.expect.alerts_not_fire}),
            "records": [r.to_json() for r in f.alerts],
            "spans": {
                k: [[round(a - load_start, 1), round(b - load_start, 1)] for a, b in v] for k, v in _spans(f).items()
            },
        },
        "plot": png,
        "notes": notes,
        "samples": f.samples,
    }


def _spans(f: RunFacts) -> dict[str, list[tuple[float, float]]]:
    from loadtests.alerts import AlertBook

    book = AlertBook()
    book.records = {r.fingerprint: r for r in f.alerts}
    return book.spans(f.run_end)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(path)


def _table(headers: list[str], rows: list[list[str]], widths: list[int]) -> list[str]:
    def clip(text: str, width: int) -> str:
        return text if len(text) <= width else text[: width - 1] + "…"

    def line(cells: list[str]) -> str:
        return "  ".join(clip(c, w).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def summary(report: dict[str, Any]) -> str:
    scen = report["scenario"]["name"]
    lines = [
        f"Load test {scen!r}: {report['status'].upper()} in {report['duration_s']:.0f} s "
        f"({report.get('scenario_duration_s') or 0:.0f} s from load start; started {report['started_at']})",
        "",
    ]
    rows = [
        ["PASS" if e["passed"] else "FAIL", e["name"], e["expected"], e["observed"]] for e in report["expectations"]
    ]
    lines += _table(["result", "expectation", "expected", "observed"], rows, [6, 40, 58, 64])
    j = report["jobs"]
    lines += [
        "",
        f"jobs: submitted {j['submitted']} = completed {j['completed']} + failed {j['failed']} + "
        f"invalid {j.get('invalid', 0)} + lost {j['lost']}  (submission requests {j['submit_requests']}, rejected "
        f"{sum(j['submit_errors'].values())}, cut off {len(j['cut_off'])})",
    ]
    if j.get("retries"):
        r = j["retries"]
        lines.append(
            f"retries: {r['jobs_retried']} job(s) retried, {r['retries']} retries in all; jobs by runs "
            f"{r['jobs_by_attempts']}"
        )
    for svc, c in sorted(j.get("by_service", {}).items()):
        lines.append(
            f"  {svc}: submitted {c['submitted']}, completed {c['completed']}, failed {c['failed']}, lost {c['lost']}"
        )
    bull = j.get("bullmq")
    if isinstance(bull, dict):
        lines.append(queueaudit.summary_line(bull))
    elif bull:
        lines.append(f"BullMQ's record not read: {bull}")
    for fault in report.get("faults") or []:
        when = "?" if fault.get("at") is None else f"+{fault['at']:.1f} s"
        line = f"fault {fault['name']} ({fault['kind']}) at {when}: {fault.get('error') or fault.get('detail')}"
        if fault.get("restored_at") is not None or fault.get("restore_error"):
            line += f"; restored at +{fault['restored_at']} s" if fault.get("restored_at") is not None else ""
            line += f"; RESTORE FAILED: {fault['restore_error']}" if fault.get("restore_error") else ""
        lines.append(line)
    lat = report["latency"]
    g, jc = lat["gateway_submit_ms"]["all"], lat["job_completion_s"]["all"]
    lines.append(
        f"latency: gateway submit p50 {g['p50']} ms, p95 {g['p95']} ms; job completion p50 "
        f"{jc['p50']} s, p95 {jc['p95']} s"
    )
    for svc, s in report["scaling"].items():
        if s.get("error"):
            lines.append(f"{svc}: scaling not summarised ({s['error']})")
            continue
        lines.append(
            f"{svc}: replicas {s['hpa_min']}..{s['max_ready_replicas']} (HPA max {s['hpa_max']}), first "
            f"scale-up {s['first_scale_up_s']} s, peak after {s['max_reached_after_s']} s, back to min "
            f"{s['back_to_min_after_load_s']} s after load; max queue depth {s['max_queue_depth']}"
        )
        pol = s.get("policy")
        if pol and pol.get("error"):
            lines.append(f"  {svc} policy: not judged ({pol['error']})")
        elif pol:
            if pol["passed"]:
                lines.append(f"  {svc} policy: held (inventory's HPA policy, {len(pol['envelope'])} samples judged)")
            else:
                first = pol["findings"][0]
                lines.append(
                    f"  {svc} policy: BROKEN {', '.join(pol['rules_broken'])}; first {first['rule']} at "
                    f"+{first['t']:g} s: expected {first['expected']}, observed {first['observed']}"
                )
    lines += pipeline.summary_lines(report.get("pipelines") or {})
    reaction = report.get("reaction") or {}
    if reaction.get("error"):
        lines.append(f"reaction timeline: not recorded ({reaction['error']})")
    elif reaction.get("services"):
        lines.append("reaction timeline (first scale-up; each hop from its own source, see report.json):")
        lines += timeline.summary_lines(reaction["services"])
    return "\n".join(lines)
