"""Holding a finished run to its scenario's expectations: every one gives what was expected, what was
observed (with the number) and pass or fail, so a failure names the expectation and the value seen."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from loadtests.accounting import Accounting
from loadtests.alerts import AlertRecord
from loadtests.envelope import Policy, Timing, Verdict, judge, pod_metric_recommendation
from loadtests.ledger import LedgerState
from loadtests.scenario import AlertMatch, Scenario


@dataclass(frozen=True)
class Result:
    name: str
    expected: str
    observed: str
    passed: bool
    value: float | int | None = None  # the observed figure the bound applies to, when there is one

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunFacts:
    """Everything the expectations are judged on."""

    scenario: Scenario
    samples: list[dict[str, Any]]
    ledger: LedgerState
    accounting: Accounting | None
    alerts: list[AlertRecord]
    anchors: dict[str, float]  # load_start, load_end and each executed action's name -> wall time
    time_scale: dict[str, int]  # service -> the HPA's harness.local/time-scale
    hpa_bounds: dict[str, tuple[int, int]]  # service -> (min, max)
    run_end: float
    locust_rc: int | None = None
    # What proves an alert fired or resolved: a notification at the checker's webhook (default), or
    # Alertmanager's API (cluster targets whose Alertmanager cannot reach the checker).
    alert_evidence: str = "webhook"
    # The inventory's HPA policy and controller timing per service (loadtests/envelope.py), and the targets of
    # the HPA's other metrics; the judge never takes them from the live HPA.
    policies: dict[str, tuple[Policy, Timing]] = field(default_factory=dict)
    # The gateway's own count of accepted jobs during the run (gateway_jobs_submitted_total, per service), or
    # why it could not be read; None: not read (no Prometheus).
    gateway_submitted: dict[str, float] | str | None = None
    other_targets: dict[str, dict[str, float]] = field(default_factory=dict)
    sample_interval_s: float = 2.0
    # Why the checker's webhook receiver could not listen (a busy port), if it could not.
    webhook_error: str | None = None
    # The faults as injected (loadtests.faults.FaultRecord), BullMQ's own record of every job
    # (loadtests.queueaudit.audit) or why it could not be read, and the gateway's restarts seen in its counter.
    faults: list[Any] = field(default_factory=list)
    queue_audit: dict[str, Any] | str | None = None
    gateway_resets: list[dict[str, Any]] = field(default_factory=list)

    def factor(self, service: str) -> float:
        """Scenario bounds on HPA timing are written for one time scale; a target's HPAs may carry another."""
        return self.scenario.written_for_time_scale / self.time_scale.get(service, self.scenario.written_for_time_scale)

    def alert_factor(self, labels: dict[str, str]) -> float:
        """Alert bounds stretch like HPA bounds: the profile that sets the time scale sets the alerts' `for:` too.
        The alert's own service when it names one, else the slowest of the scenario's services."""
        service = labels.get("service")
        if service in self.time_scale:
            return self.factor(service)
        return max((self.factor(svc) for svc in self.scenario.services), default=1.0)


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_summary(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        **{f"p{q}": _round(percentile(values, q)) for q in (50, 90, 95, 99)},
        "max": _round(max(values)) if values else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _svc_series(samples: list[dict[str, Any]], service: str, key: str) -> list[tuple[float, Any]]:
    return [
        (s["t"], s.get("services", {}).get(service, {}).get(key))
        for s in samples
        if s.get("services", {}).get(service, {}).get(key) is not None
    ]


def _load_ran(f: RunFacts) -> Result:
    planned = f.scenario.load.duration_s
    start, stop = f.ledger.load_start, f.ledger.load_stop
    expected = f"all stages ran ({planned:g} s of load) and the load process exited normally"
    if start is None:
        return Result("load.ran", expected, f"the load never started (Locust exit code {f.locust_rc})", False)
    if stop is None:
        return Result(
            "load.ran",
            expected,
            f"the load started but never stopped cleanly (Locust exit code {f.locust_rc})",
            False,
        )
    ran = stop - start
    ok = ran >= planned - 3 and f.locust_rc in (0, 1)  # 1: Locust saw failed requests, judged below
    return Result("load.ran", expected, f"{ran:.1f} s of load, Locust exit code {f.locust_rc}", ok, round(ran, 1))


def _scale_up(f: RunFacts, service: str) -> Result:
    exp = f.scenario.expect.scale_up[service]
    bound = exp.within_s * f.factor(service)
    name = f"scale_up.{service}"
    expected = f">= {exp.at_least_replicas} ready replicas within {bound:g} s of load start"
    if bound != exp.within_s:
        expected += f" (scenario: {exp.within_s:g} s at time scale {f.scenario.written_for_time_scale})"
    start = f.anchors.get("load_start")
    ready = _svc_series(f.samples, service, "ready")
    if start is None or not ready:
        return Result(name, expected, "no load start or no replica samples", False)
    reached = next((t for t, n in ready if t >= start and n >= exp.at_least_replicas), None)
    peak = max(n for t, n in ready if t >= start) if any(t >= start for t, _ in ready) else 0
    desired_peak = max((n for _, n in _svc_series(f.samples, service, "hpa_desired")), default=None)
    hpa_max = f.hpa_bounds.get(service, (None, None))[1]
    if reached is None:
        return Result(
            name,
            expected,
            f"never reached {exp.at_least_replicas}: at most {peak} ready replicas "
            f"(HPA desired at most {desired_peak}, HPA max {hpa_max})",
            False,
            peak,
        )
    elapsed = reached - start
    return Result(
        name,
        expected,
        f"{exp.at_least_replicas} ready after {elapsed:.1f} s (peak {peak}, HPA max {hpa_max})",
        elapsed <= bound,
        round(elapsed, 1),
    )


def back_to_min_time(samples: list[dict[str, Any]], service: str, minimum: int, after: float) -> float | None:
    """When the service got to its minimum (ready, replicas and HPA desired) and stayed there to the end."""
    rows = [s for s in samples if s["t"] >= after and service in s.get("services", {})]
    settled = None
    for s in rows:
        row = s["services"][service]
        at_min = row.get("ready") == minimum and row.get("replicas") == minimum and row.get("hpa_desired") == minimum
        if at_min and settled is None:
            settled = s["t"]
        elif not at_min:
            settled = None
    return settled


def drained_at(accounting: Accounting | None, service: str) -> tuple[float | None, str | None]:
    """When the service's last accepted job finished (BullMQ's finishedOn), or why that is unknown."""
    if accounting is None:
        return None, "the jobs were not polled"
    items = [o for o in accounting.outcomes.values() if o.service == service]
    open_ = [o for o in items if o.finished_at is None]
    if open_:
        return None, f"{len(open_)} of its {len(items)} jobs never finished"
    if not items:
        return None, "it was sent no job"
    return max(o.finished_at for o in items if o.finished_at is not None), None


# What back_to_min's seconds count from, as the expectation names it.
BACK_TO_MIN_SINCE = {"load_end": "load end", "drained": "its last job"}


def back_to_min_anchor(after: str, load_end: float | None, accounting: Accounting | None,
                       service: str) -> tuple[float | None, str]:
    """The time back_to_min counts from for the service, and its name for the message (or why it is unknown).
    Shared by the verdict and by the runner's settle wait, so both count from the same moment."""
    if after == "load_end":
        return load_end, "load end" if load_end is not None else "the load did not end"
    t, why = drained_at(accounting, service)
    if t is None:
        return None, f"its queue never drained: {why}"
    # A job cut off by the load's end may finish before it; the policy's clock starts at the later of the two.
    return (max(t, load_end) if load_end is not None else t), "its last job finished"


def _back_to_min(f: RunFacts, service: str) -> Result:
    bound = f.scenario.expect.back_to_min[service] * f.factor(service)
    name = f"back_to_min.{service}"
    minimum = f.hpa_bounds.get(service, (None, None))[0]
    after = f.scenario.expect.back_to_min_after.get(service, "load_end")
    anchor, what = back_to_min_anchor(after, f.anchors.get("load_end"), f.accounting, service)
    expected = f"back to the minimum ({minimum}) within {bound:g} s of {BACK_TO_MIN_SINCE[after]}, and staying there"
    if anchor is None or minimum is None:
        return Result(name, expected, what if anchor is None else "the HPA minimum is unknown", False)
    settled = back_to_min_time(f.samples, service, minimum, anchor)
    last = next((s["services"][service] for s in reversed(f.samples) if service in s.get("services", {})), {})
    if settled is None:
        waited = (f.samples[-1]["t"] - anchor) if f.samples else 0
        return Result(
            name,
            expected,
            f"still at {last.get('ready')} ready replicas (HPA desired "
            f"{last.get('hpa_desired')}) {waited:.0f} s after {what}",
            False,
        )
    elapsed = max(0.0, settled - anchor)
    return Result(name, expected, f"at {minimum} after {elapsed:.1f} s", elapsed <= bound, round(elapsed, 1))


def policy_verdict(f: RunFacts, service: str) -> Verdict | None:
    """The service's replicas (Deployment spec: what the HPA set) judged against the inventory's policy for
    the queue depth Prometheus held (what the adapter served), from the load start on."""
    if service not in f.policies:
        return None
    policy, timing = f.policies[service]
    # The series is Prometheus' value as the sampler read it; the HPA read the same store at its syncs, up to
    # one sample interval newer than the last sample.
    timing = replace(timing, lag_s=(-f.sample_interval_s, timing.margin_s))
    start = f.anchors.get("load_start")
    if start is None:
        return None
    rows = [(s["t"], s["services"][service]) for s in f.samples if s["t"] >= start - 10 and service in s["services"]]
    observed = [(t, int(r["spec_replicas"])) for t, r in rows if r.get("spec_replicas") is not None]
    usage = [(t, float(r["queue_depth"])) for t, r in rows if r.get("queue_depth") is not None]
    extra = []
    for t, r in rows:
        current, metrics = r.get("hpa_current"), r.get("hpa_metrics") or {}
        props = [
            pod_metric_recommendation(metrics[name], target, int(current), policy.tolerance)
            for name, target in f.other_targets.get(service, {}).items()
            if name in metrics and current
        ]
        if props:
            extra.append((t, max(props)))
    return judge(policy, timing, observed, usage, extra, t_origin=start)


def _policy(f: RunFacts, service: str) -> Result:
    name = f"policy.{service}"
    if service not in f.policies:
        return Result(name, "replicas follow the inventory's HPA policy", "no policy for it in the inventory", False)
    policy = f.policies[service][0]
    expected = (
        f"replicas in [{policy.min_replicas}, {policy.max_replicas}], up {policy.up.describe()}, down "
        f"{policy.down.describe()} after {policy.down.stabilization_s:g} s"
    )
    verdict = policy_verdict(f, service)
    if verdict is None:
        return Result(name, expected, "the load never started", False)
    first = verdict.first()
    if first is None:
        return Result(name, expected, f"held at all {len(verdict.envelope)} samples", True, 0)
    return Result(
        name,
        expected,
        f"{first.rule} at +{first.t:g} s: expected {first.expected}, observed {first.observed} ({first.message}); "
        f"rules broken: {', '.join(verdict.rules)}",
        False,
        len(verdict.findings),
    )


def _replica_bounds(f: RunFacts, service: str) -> Result:
    low, high = f.hpa_bounds.get(service, (None, None))
    name = f"replica_bounds.{service}"
    expected = f"replicas stay within the HPA's [{low}, {high}] all run"
    values = [n for _, n in _svc_series(f.samples, service, "replicas")]
    if not values or low is None:
        return Result(name, expected, "no replica samples", False)
    lo, hi = min(values), max(values)
    return Result(name, expected, f"between {lo} and {hi}", low <= lo and hi <= high)


def _matching(f: RunFacts, match: AlertMatch) -> list[AlertRecord]:
    return [r for r in f.alerts if match.matches(r.labels)]


def _alert_fires(f: RunFacts, index: int) -> list[Result]:
    exp = f.scenario.expect.alerts_fire[index]
    key = exp.match.key()
    ev = f.alert_evidence
    proof = "webhook notification" if ev == "webhook" else "listed by Alertmanager"
    anchor = f.anchors.get(exp.after)
    out = []
    factor = f.alert_factor(exp.match.labels)
    within = exp.within_s * factor
    resolve_within = (exp.resolve_within_s or 0) * factor
    scaled = "" if factor == 1 else f" (scenario: {exp.within_s:g} s at time scale {f.scenario.written_for_time_scale})"
    expected = f"fires ({proof}) within {within:g} s after {exp.after}{scaled}"
    records = _matching(f, exp.match)
    if ev == "webhook" and f.webhook_error:
        out = [Result(f"alert_fires.{key}", expected, f"no webhook receiver: {f.webhook_error}", False)]
        if exp.resolve_after is not None:
            out.append(
                Result(f"alert_resolves.{key}", "resolves (webhook notification)", f"no webhook receiver: "
                       f"{f.webhook_error}", False)
            )
        return out
    if anchor is None:
        return [Result(f"alert_fires.{key}", expected, f"{exp.after} never happened", False)]
    # An episode that began before the anchor proves nothing about what the anchor caused.
    fired = sorted((r for r in records if (r.fired_at(ev) or 0) >= anchor - 1), key=lambda r: r.fired_at(ev) or 0)
    record = fired[0] if fired else None
    if record is None:
        seen = [r for r in records if r.am_first_seen is not None]
        before = [r for r in records if r.fired_at(ev) is not None]
        if before:
            observed = f"was already firing {anchor - (before[0].fired_at(ev) or 0):.0f} s before {exp.after}"
        elif seen:
            observed = (
                f"Alertmanager listed it active {seen[0].am_first_seen - anchor:+.1f} s after {exp.after}, "
                "but no notification reached the webhook"
            )
        else:
            observed = "never fired (no notification, never active in Alertmanager)"
        out.append(Result(f"alert_fires.{key}", expected, observed, False))
    else:
        elapsed = (record.fired_at(ev) or 0) - anchor
        verb = "notified" if ev == "webhook" else "listed active"
        out.append(
            Result(
                f"alert_fires.{key}",
                expected,
                f"{verb} {elapsed:.1f} s after {exp.after}",
                elapsed <= within,
                round(elapsed, 1),
            )
        )
    if exp.resolve_after is None:
        return out
    r_anchor = f.anchors.get(exp.resolve_after)
    r_proof = "webhook notification" if ev == "webhook" else "gone from Alertmanager"
    r_expected = f"resolves ({r_proof}) within {resolve_within:g} s after {exp.resolve_after}"
    name = f"alert_resolves.{key}"
    resolved = None if record is None else record.resolved_at(ev)
    if record is None:
        out.append(Result(name, r_expected, "it never fired", False))
    elif r_anchor is None:
        out.append(Result(name, r_expected, f"{exp.resolve_after} never happened", False))
    elif resolved is None:
        out.append(
            Result(
                name,
                r_expected,
                f"still firing {f.run_end - r_anchor:.0f} s after {exp.resolve_after} ({r_proof} never came)",
                False,
            )
        )
    else:
        elapsed = resolved - r_anchor
        out.append(
            Result(
                name,
                r_expected,
                f"resolved {elapsed:.1f} s after {exp.resolve_after}",
                elapsed <= resolve_within,
                round(elapsed, 1),
            )
        )
    return out


def _alert_not_fires(f: RunFacts, match: AlertMatch) -> Result:
    start = f.anchors.get("run_start", 0.0)
    records = _matching(f, match)
    expected = "never fires during the run"
    if f.webhook_error and f.alert_evidence == "webhook":
        expected += " (no webhook receiver: judged from Alertmanager's active list only)"
    if not records:
        return Result(f"alert_not_fires.{match.key()}", expected, "never fired", True)
    r = records[0]
    # A resolved notification alone (it fired before the run, or its firing one was missed) still proves it fired.
    times = [t for t in (r.firing_received, r.am_first_seen) if t is not None] or [
        t for t in (r.starts_at, r.resolved_received) if t is not None
    ]
    when = min(times) if times else start
    how = (
        "notified"
        if r.firing_received is not None
        else "active in Alertmanager"
        if r.am_first_seen is not None
        else "a resolved notification (no firing one seen)"
    )
    labels = {k: v for k, v in r.labels.items() if k in ("service", "pod", "node", "Hostname")}
    return Result(
        f"alert_not_fires.{match.key()}",
        expected,
        f"{how} {when - start:.0f} s into the run {labels} ({len(records)} alert(s))",
        False,
    )


def _jobs(f: RunFacts) -> list[Result]:
    limits = f.scenario.expect.jobs
    if f.accounting is None:
        return [Result("jobs.lost", f"<= {limits.max_lost} lost", "the jobs were never accounted for", False)]
    counts = f.accounting.counts()
    lost = f.accounting.lost()
    failed = f.accounting.failed()
    out = [
        Result(
            "jobs.lost",
            f"<= {limits.max_lost} lost of the jobs the gateway accepted",
            f"{counts['lost']} lost of {counts['submitted']}"
            + (f" (e.g. {lost[0]['id']}: {lost[0]['reason']})" if lost else ""),
            counts["lost"] <= limits.max_lost,
            counts["lost"],
        ),
        Result(
            "jobs.failed",
            f"<= {limits.max_failed} failed",
            f"{counts['failed']} failed of {counts['submitted']}"
            + (f" (e.g. {failed[0]['id']}: {failed[0]['reason']})" if failed else ""),
            counts["failed"] <= limits.max_failed,
            counts["failed"],
        ),
    ]
    invalid = f.accounting.invalid()
    out.append(
        Result(
            "jobs.invalid",
            "0 completed jobs without a result (STT: a transcript; TTS: audio longer than 0 s)",
            f"{counts['invalid']} of {counts['submitted']}" + (f" (e.g. {invalid[0]['id']}: {invalid[0]['reason']})"
                                                              if invalid else ""),
            counts["invalid"] == 0,
            counts["invalid"],
        )
    )
    if counts["submitted"] == 0:
        out.append(Result("jobs.submitted", "> 0 jobs accepted by the gateway", "0", False, 0))
    if limits.max_submit_errors is not None:
        errors = [s for s in f.ledger.submissions if not s.ok]
        sample = f" (e.g. {errors[0].error})" if errors else ""
        out.append(
            Result(
                "jobs.submit_errors",
                f"<= {limits.max_submit_errors} rejected or failed submissions",
                f"{len(errors)} of {len(f.ledger.submissions)}{sample}",
                len(errors) <= limits.max_submit_errors,
                len(errors),
            )
        )
    return out


def _ledger(f: RunFacts) -> list[Result]:
    """The ledger is exact: every line readable, and the gateway counted what the ledger says it accepted
    (plus at most the requests cut off in flight at the end, which the gateway may have accepted)."""
    led = f.ledger
    out = [
        Result(
            "jobs.ledger",
            "every line of jobs.jsonl readable",
            f"{led.bad_lines} unreadable line(s)" + (f", e.g. {led.bad_examples[0]!r}" if led.bad_examples else ""),
            led.bad_lines == 0,
            led.bad_lines,
        )
    ]
    if f.gateway_submitted is None:
        return out
    accepted = len(led.jobs)
    cut = len(led.cut_off())
    expected = f"the gateway counted {accepted} accepted (the ledger) + at most {cut} cut off in flight"
    if isinstance(f.gateway_submitted, str):
        out.append(Result("jobs.gateway_count", expected, f"not readable: {f.gateway_submitted}", False))
        return out
    # What Locust submitted (a pipeline's jobs are counted as the pipeline, not as its stages' services).
    counted = sum(f.gateway_submitted.get(kind, 0.0) for kind in f.scenario.kinds)
    by = ", ".join(f"{kind} {f.gateway_submitted.get(kind, 0):g}" for kind in f.scenario.kinds)
    # A gateway restart resets its counter; what it counted between its last scrape and the restart is gone, so
    # the ledger's jobs accepted in that gap may be missing from the count (and no more than those).
    unseen = sum(
        1
        for job in led.jobs
        for gap in f.gateway_resets
        if gap.get("service") == job.service and gap["after"] - 1 <= job.t <= gap["before"] + 1
    )
    observed = f"gateway_jobs_submitted_total rose by {counted:g} ({by}); ledger {accepted} accepted, {cut} cut off"
    if f.gateway_resets:
        expected += f", less at most the {unseen} accepted between a restart and its last scrape before"
        observed += f"; counter reset {len(f.gateway_resets)} time(s) (gateway restart)"
    out.append(
        Result(
            "jobs.gateway_count",
            expected,
            observed,
            accepted - unseen <= counted <= accepted + cut,
            counted,
        )
    )
    return out


def counter_increase(points: list[tuple[float, float]]) -> tuple[float, list[dict[str, float]]]:
    """A counter's rise over raw samples, across resets (a restarted process starts again from 0), and each
    reset as the gap between the last sample before it and the first after it."""
    total, gaps = 0.0, []
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if v1 >= v0:
            total += v1 - v0
        else:
            total += v1
            gaps.append({"after": t0, "before": t1})
    return total, gaps


def series_increase(
    series: list[dict[str, Any]], since: float, until: float, label: str = "service"
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """A counter's rise from ``since`` to ``until`` per ``label``, summed over its series (one per process that
    exports it: each gateway replica, and each replica that replaces one), from raw samples (a Prometheus matrix).

    Each series is taken on its own, because replicas are scraped at different moments: merged into one line their
    values interleave (one replica at 50, the other at 30) and every step down would read as a reset. In a series,
    a step down is a restart of its process (counted from 0 again). A series with samples before ``since`` starts
    from its last one there; one born during the run counts its first value whole (its process began at 0).
    A gap is a stretch in which what a process counted may be lost: between the last sample before a reset and
    the first after it, and from the last sample of a series that ended before ``until`` (no sample in its last
    2.5 scrape intervals: its pod was deleted) to the first sample of the next series of that ``label`` born after
    it (or ``until``)."""
    per: list[tuple[str, list[tuple[float, float]]]] = []
    for item in series:
        points = sorted((float(ts), float(v)) for ts, v in item.get("values") or [])
        if points:
            per.append((item.get("metric", {}).get(label, ""), points))
    counts: dict[str, float] = {}
    gaps: list[dict[str, Any]] = []
    for key, points in per:
        before = [p for p in points if p[0] <= since]
        during = [p for p in points if since < p[0] <= until]
        start = before[-1] if before else (since, 0.0)
        total, resets = counter_increase([start, *during])
        counts[key] = counts.get(key, 0.0) + total
        gaps += [{label: key, **g} for g in resets]
        last = points[-1][0]
        steps = sorted(b[0] - a[0] for a, b in itertools.pairwise(points))
        spacing = steps[len(steps) // 2] if steps else 15.0  # its scrape interval, as its samples show it
        if during and last < until - 2.5 * spacing:
            born = [p[0][0] for k, p in per if k == key and p[0][0] > last]
            gaps.append({label: key, "after": last, "before": min(born) if born else until})
    return counts, gaps


def _faults(f: RunFacts) -> list[Result]:
    out = []
    done = {r.name: r for r in f.faults}
    start = f.anchors.get("load_start")
    for fault in f.scenario.faults:
        rec = done.get(fault.name)
        # A worker kill may wait up to 10 s for every worker to hold a job.
        slack = 12.0 if fault.kind == "kill_worker" else 3.0
        expected = f"{fault.describe()} injected at +{fault.at_s:g} s (at most {slack:g} s late)"
        if rec is None:
            out.append(Result(f"fault.{fault.name}", expected, "never injected (the run ended first)", False))
            continue
        at = None if rec.t is None or start is None else rec.t - start
        observed = f"at +{at:.1f} s: " if at is not None else ""
        observed += rec.error or rec.detail or ""
        ok = rec.error is None and at is not None and at - fault.at_s <= slack
        if fault.restore_after_s is not None:
            if rec.restore_error or rec.restored_t is None:
                ok = False
                observed += f"; NOT restored: {rec.restore_error or 'the run ended first'}"
            else:
                observed += f"; restored at +{rec.restored_t - (start or 0):.1f} s ({rec.restore_detail})"
        out.append(Result(f"fault.{fault.name}", expected, observed, ok, None if at is None else round(at, 1)))
    return out


def _exactly_once(f: RunFacts) -> Result:
    expected = "every accepted job completed exactly once in BullMQ's event stream (no job finished twice)"
    a = f.queue_audit
    if isinstance(a, str):
        return Result("jobs.exactly_once", expected, f"not readable: {a}", False)
    assert a is not None
    problems = []
    if a["events_trimmed"]:
        problems.append(f"event stream of {a['events_trimmed']} trimmed past the run start: cannot judge")
    if a["finished_more_than_once"]:
        j = a["finished_more_than_once"][0]
        problems.append(f"{len(a['finished_more_than_once'])} finished more than once (e.g. {j}: "
                        f"{a['per_job'][j]['finishes']} finishes)")
    if a["not_completed"]:
        j = a["not_completed"][0]
        problems.append(f"{len(a['not_completed'])} without exactly one completion (e.g. {j}: "
                        f"{a['per_job'][j]})")
    observed = (
        f"{a['completed_once']} of {a['jobs']} completed once; runs per job {a['jobs_by_runs']} "
        f"({a['retries']} retries, {a['stalls']} stalls)"
    )
    if a["unledgered_added"]:
        observed += f"; {len(a['unledgered_added'])} job(s) added that the ledger never saw accepted"
    if problems:
        observed += "; " + "; ".join(problems)
    return Result("jobs.exactly_once", expected, observed, not problems, a["completed_once"])


def _latency(f: RunFacts) -> list[Result]:
    bounds = f.scenario.expect.latency_p95
    out = []
    if bounds.gateway_ms is not None:
        values = [s.latency_ms for s in f.ledger.submissions if s.status]
        p95 = percentile(values, 95)
        out.append(
            Result(
                "latency_p95.gateway_ms",
                f"p95 of submission requests <= {bounds.gateway_ms:g} ms",
                "no answered requests" if p95 is None else f"{p95:.0f} ms over {len(values)} requests",
                p95 is not None and p95 <= bounds.gateway_ms,
                _round(p95),
            )
        )
    for scope, bound in bounds.job_completion_s.items():
        outcomes = [] if f.accounting is None else list(f.accounting.outcomes.values())
        values = [
            o.total_s
            for o in outcomes
            if o.state == "completed" and o.total_s is not None and (scope == "all" or o.service == scope)
        ]
        p95 = percentile(values, 95)
        out.append(
            Result(
                f"latency_p95.job_completion_s.{scope}",
                f"p95 from submission to result <= {bound:g} s",
                "no completed jobs" if p95 is None else f"{p95:.1f} s over {len(values)} jobs",
                p95 is not None and p95 <= bound,
                _round(p95),
            )
        )
    return out


def _guarded(name: str, judge_one: Any, *args: Any) -> list[Result]:
    """One expectation's verdict; a judge that raises gives a failed expectation with the reason, never a
    checker without a report."""
    try:
        out = judge_one(*args)
    except Exception as exc:
        return [Result(name, "judged from the run's records", f"could not be judged: {type(exc).__name__}: {exc}",
                       False)]
    return out if isinstance(out, list) else [out]


def evaluate(f: RunFacts) -> list[Result]:
    e = f.scenario.expect
    results = _guarded("load.ran", _load_ran, f)
    for svc in e.scale_up:
        results += _guarded(f"scale_up.{svc}", _scale_up, f, svc)
    for svc in e.back_to_min:
        results += _guarded(f"back_to_min.{svc}", _back_to_min, f, svc)
    if e.replica_bounds:
        for svc in f.scenario.services:
            results += _guarded(f"replica_bounds.{svc}", _replica_bounds, f, svc)
    for svc in e.policy:
        results += _guarded(f"policy.{svc}", _policy, f, svc)
    for i, exp in enumerate(e.alerts_fire):
        results += _guarded(f"alert_fires.{exp.match.key()}", _alert_fires, f, i)
    for m in e.alerts_not_fire:
        results += _guarded(f"alert_not_fires.{m.key()}", _alert_not_fires, f, m)
    results += _guarded("jobs", _jobs, f)
    results += _guarded("jobs.ledger", _ledger, f)
    if f.scenario.faults:
        results += _guarded("faults", _faults, f)
    if f.queue_audit is not None:
        results += _guarded("jobs.exactly_once", _exactly_once, f)
    results += _guarded("latency_p95", _latency, f)
    return results
