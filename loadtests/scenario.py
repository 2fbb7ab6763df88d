"""Scenario files: a load shape, timed actions and the expectations the checker holds the run to.

A scenario is YAML (format in docs/loadtests.md). It is validated completely when it is loaded; a mistake
raises ``ScenarioError`` naming the file, the key path (``expect.scale_up.stt.within_s``), the bad value
and what is allowed, before anything touches the target.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loadtests import inventory as inventory_facts
from loadtests.faults import KINDS as FAULT_KINDS
from loadtests.faults import SERVICE_KINDS as FAULT_SERVICE_KINDS
from loadtests.faults import Fault

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
DEFAULT_SCENARIO = "surge"
# The job kinds this package has a Locust user for (loadtests/locustfile.py); a mix entry names an enabled service
# of the inventory's table (harness_services) whose queue_type is one of them, or a pipeline.
LOAD_KINDS = ("stt", "tts", "mt")
# Pipelines: a job kind whose jobs run through services (each stage a job in that service's queue, scaled by that
# service's HPA). A dubbing job of an audio upload runs stt -> mt -> tts (workers/dubbing); it is loadable where the
# target runs the orchestrator (harness_dubbing_enabled) and every stage is loadable. Its stages get load through it:
# the expectations name them (expect.scale_up.mt), and the pipeline itself only where a job's latency is judged.
PIPELINES: dict[str, tuple[str, ...]] = {"dubbing": ("stt", "mt", "tts")}
# Reference points an alert expectation can be timed from, besides the names of the scenario's actions.
ANCHORS = ("load_start", "load_end")
# Scenario bounds on HPA-driven timings are written for the fast profile (policy periods / 10).
DEFAULT_TIME_SCALE = 10
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

DEFAULT_TEXTS = (
    "Your order has shipped and will arrive on Tuesday.",
    "The meeting moved to three thirty in the small conference room.",
    "Please hold while we connect you to the next available agent.",
    "Temperatures will drop below freezing tonight, so cover the plants.",
    "Thank you for calling.",
    "The quarterly report shows revenue up eight percent compared with last year.",
)
DEFAULT_PHRASES = (
    "Turn on the kitchen lights.",
    "What is the weather like tomorrow morning?",
    "Schedule a call with the design team at noon.",
    "Read me the last three messages.",
)


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Stage:
    name: str
    duration_s: float
    users: int
    spawn_rate: float


@dataclass(frozen=True)
class Load:
    stages: tuple[Stage, ...]
    wait_s: tuple[float, float]
    mix: dict[str, float]
    texts: tuple[str, ...] = DEFAULT_TEXTS
    phrases: tuple[str, ...] = DEFAULT_PHRASES

    @property
    def duration_s(self) -> float:
        return sum(stage.duration_s for stage in self.stages)

    def stage_at(self, run_time_s: float) -> Stage | None:
        """The stage running ``run_time_s`` seconds after the load started; None once it is over."""
        end = 0.0
        for stage in self.stages:
            end += stage.duration_s
            if run_time_s < end:
                return stage
        return None


@dataclass(frozen=True)
class Action:
    name: str
    at_s: float
    set_monthly_budget_usd: dict[str, float] = field(default_factory=dict)
    restore_monthly_budget: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"{svc} budget -> ${usd:g}/month" for svc, usd in self.set_monthly_budget_usd.items()]
        parts += [f"{svc} budget restored" for svc in self.restore_monthly_budget]
        return ", ".join(parts)


@dataclass(frozen=True)
class Timeouts:
    baseline_s: float = 180.0
    drain_s: float = 240.0
    settle_s: float = 240.0


@dataclass(frozen=True)
class ScaleUp:
    at_least_replicas: int
    within_s: float


@dataclass(frozen=True)
class AlertMatch:
    alertname: str
    labels: dict[str, str] = field(default_factory=dict)

    def key(self) -> str:
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return f"{self.alertname}{{{labels}}}" if labels else self.alertname

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get("alertname") == self.alertname and all(labels.get(k) == v for k, v in self.labels.items())


@dataclass(frozen=True)
class AlertFires:
    match: AlertMatch
    after: str
    within_s: float
    resolve_after: str | None = None
    resolve_within_s: float | None = None


@dataclass(frozen=True)
class JobLimits:
    max_lost: int = 0
    max_failed: int = 0
    max_submit_errors: int | None = None


@dataclass(frozen=True)
class LatencyBounds:
    gateway_ms: float | None = None
    job_completion_s: dict[str, float] = field(default_factory=dict)  # service or "all" -> bound


# What expect.back_to_min.<svc>.within_s counts from.
BACK_TO_MIN_ANCHORS = ("load_end", "drained")


@dataclass(frozen=True)
class Expectations:
    scale_up: dict[str, ScaleUp] = field(default_factory=dict)
    back_to_min: dict[str, float] = field(default_factory=dict)
    replica_bounds: bool = False
    alerts_fire: tuple[AlertFires, ...] = ()
    alerts_not_fire: tuple[AlertMatch, ...] = ()
    jobs: JobLimits = JobLimits()
    latency_p95: LatencyBounds = LatencyBounds()
    policy: tuple[str, ...] = ()  # services whose replicas are judged against the inventory's HPA policy
    # service -> what back_to_min's seconds count from: "load_end" (default) or "drained" (the service's last
    # accepted job finished). The policy can only take replicas away once the queue is empty, and how long the
    # backlog takes to drain depends on the machine, which latency_p95.job_completion_s bounds already.
    back_to_min_after: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    path: Path
    load: Load
    actions: tuple[Action, ...]
    timeouts: Timeouts
    expect: Expectations
    written_for_time_scale: int = DEFAULT_TIME_SCALE
    faults: tuple[Fault, ...] = ()

    @property
    def kinds(self) -> tuple[str, ...]:
        """What Locust submits: the mix entries with a weight (services and pipelines)."""
        return tuple(sorted(kind for kind, weight in self.load.mix.items() if weight > 0))

    @property
    def services(self) -> tuple[str, ...]:
        """The model services that get load (each with its HPA): those of the mix, and a pipeline's stages."""
        return tuple(sorted(with_stages(self.kinds) - set(PIPELINES)))

    @property
    def pipelines(self) -> tuple[str, ...]:
        return tuple(kind for kind in self.kinds if kind in PIPELINES)

    def budget_services(self) -> set[str]:
        touched: set[str] = set()
        for action in self.actions:
            touched |= set(action.set_monthly_budget_usd) | set(action.restore_monthly_budget)
        return touched


# ---------------------------------------------------------------------------------------------- checks


class _Checker:
    """Validation helpers that carry the file name into every message."""

    def __init__(self, source: str, services: tuple[str, ...]) -> None:
        self.source = source
        self.services = services

    def fail(self, where: str, message: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {where}: {message}")

    def mapping(self, raw: Any, where: str, required: set[str], optional: set[str]) -> Mapping[str, Any]:
        if not isinstance(raw, Mapping):
            raise self.fail(
                where,
                f"must be a mapping with keys {sorted(required | optional)}; got {type(raw).__name__} {_short(raw)}",
            )
        unknown = sorted(str(k) for k in raw if k not in required | optional)
        if unknown:
            raise self.fail(where, f"unknown key(s) {unknown}; allowed: {sorted(required | optional)}")
        missing = sorted(required - set(raw))
        if missing:
            raise self.fail(where, f"missing required key(s) {missing}")
        return raw

    def number(self, raw: Any, where: str, minimum: float = 0.0, strict: bool = False) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise self.fail(where, f"must be a number; got {_short(raw)}")
        if raw < minimum or (strict and raw == minimum):
            bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
            raise self.fail(where, f"must be {bound}; got {raw!r}")
        return float(raw)

    def integer(self, raw: Any, where: str, minimum: int = 0) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise self.fail(where, f"must be a whole number; got {_short(raw)}")
        if raw < minimum:
            raise self.fail(where, f"must be at least {minimum}; got {raw}")
        return raw

    def string(self, raw: Any, where: str, pattern: re.Pattern[str] | None = None) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise self.fail(where, f"must be a non-empty string; got {_short(raw)}")
        if pattern is not None and not pattern.match(raw):
            raise self.fail(where, f"{raw!r} must match {pattern.pattern} (lower case letters, digits, '-', '_')")
        return raw

    def service(self, raw: Any, where: str, pipeline: bool = False) -> str:
        if raw in PIPELINES and raw in self.services and not pipeline:
            raise self.fail(where, f"{raw!r} is a pipeline, not a service: name its stages "
                            f"{list(PIPELINES[raw])}, whose HPAs, budgets and workers are the services'")
        if raw not in self.services:
            raise self.fail(
                where,
                f"unknown service {_short(raw)}; allowed: {list(self.services)} (the enabled services of the "
                f"inventory whose queue_type has a load user: {list(LOAD_KINDS)}; the pipelines {list(PIPELINES)} "
                "where the target runs them and every stage is enabled)",
            )
        return raw

    def strings(self, raw: Any, where: str) -> tuple[str, ...]:
        if not isinstance(raw, list) or not raw:
            raise self.fail(where, f"must be a non-empty list of strings; got {_short(raw)}")
        return tuple(self.string(item, f"{where}[{i}]") for i, item in enumerate(raw))


def _short(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def _stages(c: _Checker, raw: Any) -> tuple[Stage, ...]:
    if not isinstance(raw, list) or not raw:
        raise c.fail("load.stages", f"must be a non-empty list of stages; got {_short(raw)}")
    stages = []
    for i, item in enumerate(raw):
        where = f"load.stages[{i}]"
        m = c.mapping(item, where, {"name", "duration_s", "users", "spawn_rate"}, set())
        stages.append(
            Stage(
                c.string(m["name"], f"{where}.name", _NAME),
                c.number(m["duration_s"], f"{where}.duration_s", 0, strict=True),
                c.integer(m["users"], f"{where}.users"),
                c.number(m["spawn_rate"], f"{where}.spawn_rate", 0, strict=True),
            )
        )
    if not any(stage.users for stage in stages):
        raise c.fail("load.stages", "every stage has users: 0, so no load would run")
    return tuple(stages)


def _load(c: _Checker, raw: Any) -> Load:
    m = c.mapping(raw, "load", {"stages", "wait_s", "mix"}, {"texts", "phrases"})
    wait = m["wait_s"]
    if not isinstance(wait, list) or len(wait) != 2:
        raise c.fail("load.wait_s", f"must be [min, max] seconds between one user's submissions; got {_short(wait)}")
    low, high = c.number(wait[0], "load.wait_s[0]"), c.number(wait[1], "load.wait_s[1]")
    if low > high:
        raise c.fail("load.wait_s", f"min {low:g} is greater than max {high:g}")
    for kind in m["mix"] if isinstance(m["mix"], Mapping) else ():
        if kind in PIPELINES and kind not in c.services:
            raise c.fail(f"load.mix.{kind}", f"the pipeline {kind!r} is not run on this target: it needs the "
                         f"orchestrator (harness_dubbing_enabled: true) and the services {list(PIPELINES[kind])} "
                         f"enabled (loadable here: {list(c.services)}); on the local target add "
                         "-e @inventories/extra-vars/local-dubbing.yml to site.yml and loadtest.yml")
    mix_raw = c.mapping(m["mix"], "load.mix", set(), set(c.services))
    mix = {c.service(k, "load.mix", pipeline=True): c.number(v, f"load.mix.{k}") for k, v in mix_raw.items()}
    if not any(mix.values()):
        raise c.fail("load.mix", f"needs at least one service with a weight above 0; got {dict(mix)}")
    load = Load(_stages(c, m["stages"]), (low, high), mix)
    if "texts" in m:
        load = Load(load.stages, load.wait_s, load.mix, texts=c.strings(m["texts"], "load.texts"))
    if "phrases" in m:
        load = Load(load.stages, load.wait_s, load.mix, load.texts, c.strings(m["phrases"], "load.phrases"))
    return load


def _actions(c: _Checker, raw: Any) -> tuple[Action, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise c.fail("actions", f"must be a list of actions; got {_short(raw)}")
    actions: list[Action] = []
    for i, item in enumerate(raw):
        where = f"actions[{i}]"
        m = c.mapping(item, where, {"name", "at_s"}, {"set_monthly_budget_usd", "restore_monthly_budget"})
        name = c.string(m["name"], f"{where}.name", _NAME)
        if name in ANCHORS or any(a.name == name for a in actions):
            raise c.fail(f"{where}.name", f"{name!r} is already used (action names are unique and not {list(ANCHORS)})")
        budgets: dict[str, float] = {}
        if "set_monthly_budget_usd" in m:
            raw_budgets = c.mapping(
                m["set_monthly_budget_usd"], f"{where}.set_monthly_budget_usd", set(), set(c.services)
            )
            budgets = {
                c.service(k, f"{where}.set_monthly_budget_usd"): c.number(
                    v, f"{where}.set_monthly_budget_usd.{k}", 0, strict=True
                )
                for k, v in raw_budgets.items()
            }
        restore: tuple[str, ...] = ()
        if "restore_monthly_budget" in m:
            restore = tuple(
                c.service(s, f"{where}.restore_monthly_budget")
                for s in c.strings(m["restore_monthly_budget"], f"{where}.restore_monthly_budget")
            )
        if not budgets and not restore:
            raise c.fail(where, "does nothing: give set_monthly_budget_usd and/or restore_monthly_budget")
        actions.append(Action(name, c.number(m["at_s"], f"{where}.at_s"), budgets, restore))
    return tuple(actions)


def _faults(c: _Checker, raw: Any, actions: tuple[Action, ...], mix_services: set[str]) -> tuple[Fault, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise c.fail("faults", f"must be a list of faults; got {_short(raw)}")
    faults: list[Fault] = []
    taken = {*ANCHORS, *(a.name for a in actions)}
    for i, item in enumerate(raw):
        where = f"faults[{i}]"
        m = c.mapping(item, where, {"name", "at_s", "kind"}, {"service", "max_replicas", "restore_after_s"})
        name = c.string(m["name"], f"{where}.name", _NAME)
        if name in taken:
            raise c.fail(f"{where}.name", f"{name!r} is already used (fault and action names are unique and not "
                                          f"{list(ANCHORS)})")
        taken.add(name)
        kind = m["kind"]
        if kind not in FAULT_KINDS:
            raise c.fail(f"{where}.kind", f"unknown fault kind {_short(kind)}; allowed: {list(FAULT_KINDS)}")
        service = None
        if kind in FAULT_SERVICE_KINDS:
            if "service" not in m:
                raise c.fail(where, f"kind {kind} needs a service (one of {sorted(mix_services)})")
            service = c.service(m["service"], f"{where}.service")
            if service not in mix_services:
                raise c.fail(f"{where}.service", f"service {service!r} gets no load (load.mix gives it no weight)")
        elif "service" in m:
            raise c.fail(f"{where}.service", f"kind {kind} takes no service")
        max_replicas = restore = None
        if kind == "lower_hpa_max":
            if "max_replicas" not in m:
                raise c.fail(where, "kind lower_hpa_max needs max_replicas (the lowered HPA maximum)")
            max_replicas = c.integer(m["max_replicas"], f"{where}.max_replicas", 1)
            if "restore_after_s" in m:
                restore = c.number(m["restore_after_s"], f"{where}.restore_after_s", 0, strict=True)
        else:
            for key in ("max_replicas", "restore_after_s"):
                if key in m:
                    raise c.fail(f"{where}.{key}", f"only kind lower_hpa_max takes {key}")
        faults.append(Fault(name, c.number(m["at_s"], f"{where}.at_s"), kind, service, max_replicas, restore))
    return tuple(faults)


def _alert_match(c: _Checker, raw: Any, where: str) -> AlertMatch:
    if isinstance(raw, str):
        return AlertMatch(c.string(raw, where))
    m = c.mapping(raw, where, {"alertname"}, {"labels"})
    labels = m.get("labels", {})
    if not isinstance(labels, Mapping):
        raise c.fail(f"{where}.labels", f"must be a mapping of label name to value; got {_short(labels)}")
    return AlertMatch(
        c.string(m["alertname"], f"{where}.alertname"),
        {str(k): c.string(v, f"{where}.labels.{k}") for k, v in labels.items()},
    )


def _anchor(c: _Checker, raw: Any, where: str, actions: tuple[Action, ...], faults: tuple[Fault, ...] = ()) -> str:
    allowed = [*ANCHORS, *(a.name for a in actions), *(f.name for f in faults)]
    if raw not in allowed:
        raise c.fail(where, f"{_short(raw)} is not a reference point; allowed: {allowed}")
    return raw


def _alerts_fire(
    c: _Checker, raw: Any, actions: tuple[Action, ...], faults: tuple[Fault, ...] = ()
) -> tuple[AlertFires, ...]:
    if not isinstance(raw, list):
        raise c.fail("expect.alerts_fire", f"must be a list; got {_short(raw)}")
    out = []
    for i, item in enumerate(raw):
        where = f"expect.alerts_fire[{i}]"
        m = c.mapping(item, where, {"alertname", "within_s"}, {"labels", "after", "resolve"})
        match = _alert_match(c, {k: m[k] for k in ("alertname", "labels") if k in m}, where)
        after = _anchor(c, m.get("after", "load_start"), f"{where}.after", actions, faults)
        resolve_after = resolve_within = None
        if "resolve" in m:
            r = c.mapping(m["resolve"], f"{where}.resolve", {"within_s"}, {"after"})
            resolve_after = _anchor(c, r.get("after", "load_end"), f"{where}.resolve.after", actions, faults)
            resolve_within = c.number(r["within_s"], f"{where}.resolve.within_s", 0, strict=True)
        out.append(
            AlertFires(
                match,
                after,
                c.number(m["within_s"], f"{where}.within_s", 0, strict=True),
                resolve_after,
                resolve_within,
            )
        )
    return tuple(out)


def _expect(
    c: _Checker, raw: Any, mix_services: set[str], actions: tuple[Action, ...], faults: tuple[Fault, ...] = ()
) -> Expectations:
    keys = {
        "scale_up",
        "back_to_min",
        "replica_bounds",
        "alerts_fire",
        "alerts_not_fire",
        "jobs",
        "latency_p95",
        "policy",
    }
    m = c.mapping(raw, "expect", set(), keys)

    def per_service(key: str) -> Mapping[str, Any]:
        section = c.mapping(m.get(key, {}), f"expect.{key}", set(), set(c.services))
        for svc in section:
            c.service(svc, f"expect.{key}.{svc}")
            if svc not in mix_services:
                raise c.fail(
                    f"expect.{key}.{svc}",
                    f"service {svc!r} gets no load (load.mix gives it no weight); load goes to {sorted(mix_services)}",
                )
        return section

    scale_up = {}
    for svc, item in per_service("scale_up").items():
        where = f"expect.scale_up.{svc}"
        s = c.mapping(item, where, {"at_least_replicas", "within_s"}, set())
        scale_up[svc] = ScaleUp(
            c.integer(s["at_least_replicas"], f"{where}.at_least_replicas", 1),
            c.number(s["within_s"], f"{where}.within_s", 0, strict=True),
        )
    back_to_min = {}
    back_to_min_after = {}
    for svc, item in per_service("back_to_min").items():
        where = f"expect.back_to_min.{svc}"
        b = c.mapping(item, where, {"within_s"}, {"after"})
        back_to_min[svc] = c.number(b["within_s"], f"{where}.within_s", 0, strict=True)
        after = b.get("after", "load_end")
        if after not in BACK_TO_MIN_ANCHORS:
            raise c.fail(f"{where}.after", f"must be one of {list(BACK_TO_MIN_ANCHORS)}; got {_short(after)}")
        back_to_min_after[svc] = after
    bounds = m.get("replica_bounds", False)
    if not isinstance(bounds, bool):
        raise c.fail("expect.replica_bounds", f"must be true or false; got {_short(bounds)}")
    fire = _alerts_fire(c, m.get("alerts_fire", []), actions, faults)
    not_fire_raw = m.get("alerts_not_fire", [])
    if not isinstance(not_fire_raw, list):
        raise c.fail(
            "expect.alerts_not_fire",
            f"must be a list of alert names or {{alertname, labels}}; got {_short(not_fire_raw)}",
        )
    not_fire = tuple(_alert_match(c, item, f"expect.alerts_not_fire[{i}]") for i, item in enumerate(not_fire_raw))
    for forbidden in not_fire:
        for wanted in fire:
            if forbidden.alertname == wanted.match.alertname and (
                not forbidden.labels or forbidden.labels == wanted.match.labels
            ):
                raise c.fail(
                    "expect.alerts_not_fire",
                    f"{forbidden.key()} is also in expect.alerts_fire; an alert cannot be both expected and forbidden",
                )
    j = c.mapping(m.get("jobs", {}), "expect.jobs", set(), {"max_lost", "max_failed", "max_submit_errors"})
    jobs = JobLimits(
        c.integer(j.get("max_lost", 0), "expect.jobs.max_lost"),
        c.integer(j.get("max_failed", 0), "expect.jobs.max_failed"),
        None
        if j.get("max_submit_errors") is None
        else c.integer(j["max_submit_errors"], "expect.jobs.max_submit_errors"),
    )
    lat = c.mapping(m.get("latency_p95", {}), "expect.latency_p95", set(), {"gateway_ms", "job_completion_s"})
    gateway_ms = (
        None
        if "gateway_ms" not in lat
        else c.number(lat["gateway_ms"], "expect.latency_p95.gateway_ms", 0, strict=True)
    )
    job_s: dict[str, float] = {}
    if "job_completion_s" in lat:
        raw_job = lat["job_completion_s"]
        if isinstance(raw_job, Mapping):
            for svc, bound in c.mapping(raw_job, "expect.latency_p95.job_completion_s", set(), set(c.services)).items():
                if svc not in mix_services:
                    raise c.fail(f"expect.latency_p95.job_completion_s.{svc}",
                                 f"{svc!r} gets no load; load goes to {sorted(mix_services)}")
                job_s[svc] = c.number(bound, f"expect.latency_p95.job_completion_s.{svc}", 0, strict=True)
        else:
            job_s["all"] = c.number(raw_job, "expect.latency_p95.job_completion_s", 0, strict=True)
    policy_raw = m.get("policy", [])
    if policy_raw is True:
        policy = tuple(sorted(mix_services - set(PIPELINES)))
    elif policy_raw is False:
        policy = ()
    elif isinstance(policy_raw, list):
        policy = tuple(c.service(svc, "expect.policy") for svc in policy_raw)
        for svc in policy:
            if svc not in mix_services:
                raise c.fail("expect.policy", f"service {svc!r} gets no load (load.mix gives it no weight)")
    else:
        raise c.fail("expect.policy", f"must be true, false or a list of services; got {_short(policy_raw)}")
    return Expectations(
        scale_up, back_to_min, bounds, fire, not_fire, jobs, LatencyBounds(gateway_ms, job_s), policy, back_to_min_after
    )


def with_stages(kinds: Sequence[str] | set[str]) -> set[str]:
    """The kinds and every stage of the pipelines among them."""
    return set(kinds).union(*(PIPELINES.get(kind, ()) for kind in kinds))


def loadable_services(services: Sequence[Mapping[str, Any]], pipelines: Sequence[str] = ()) -> tuple[str, ...]:
    """The names of the enabled table entries whose queue_type this package can drive, and the ``pipelines`` the
    target runs (harness_dubbing_enabled: dubbing) whose every stage is one of them."""
    unknown = sorted(set(pipelines) - set(PIPELINES))
    if unknown:
        raise ValueError(f"unknown pipeline(s) {unknown}; known: {sorted(PIPELINES)}")
    names = tuple(
        str(s["name"])
        for s in services
        if s.get("enabled", True) is True and s.get("queue_type", s["name"]) in LOAD_KINDS
    )
    return names + tuple(p for p in pipelines if set(PIPELINES[p]) <= set(names))


def parse_scenario(
    raw: Any, source: str = "<scenario>", path: Path | None = None, services: Sequence[str] | None = None
) -> Scenario:
    """``services``: the names a scenario may give load to; by default the local inventory's (loadable_services)."""
    c = _Checker(source, tuple(services) if services is not None else loadable_services(inventory_facts.services()))
    m = c.mapping(
        raw,
        "(top level)",
        {"name", "load", "expect"},
        {"description", "actions", "faults", "timeouts", "written_for_time_scale"},
    )
    name = c.string(m["name"], "name", _NAME)
    description = m.get("description", "")
    if not isinstance(description, str):
        raise c.fail("description", f"must be a string; got {_short(description)}")
    load = _load(c, m["load"])
    actions = _actions(c, m.get("actions"))
    t = c.mapping(m.get("timeouts", {}), "timeouts", set(), {"baseline_s", "drain_s", "settle_s"})
    defaults = Timeouts()
    timeouts = Timeouts(
        *(
            c.number(t.get(k, getattr(defaults, k)), f"timeouts.{k}", 0, strict=True)
            for k in ("baseline_s", "drain_s", "settle_s")
        )
    )
    scale = c.integer(m.get("written_for_time_scale", DEFAULT_TIME_SCALE), "written_for_time_scale", 1)
    mix_services = with_stages({s for s, w in load.mix.items() if w > 0})
    faults = _faults(c, m.get("faults"), actions, mix_services)
    expect = _expect(c, m["expect"], mix_services, actions, faults)
    return Scenario(name, description.strip(), path or Path(source), load, actions, timeouts, expect, scale, faults)


def resolve_path(name_or_path: str) -> Path:
    """A scenario by name (``surge`` -> loadtests/scenarios/surge.yml) or by path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yml", ".yaml") or candidate.is_file():
        return candidate
    path = SCENARIO_DIR / f"{name_or_path}.yml"
    if not path.is_file():
        raise ScenarioError(f"scenario {name_or_path!r} not found: no {path}; available: {available()}")
    return path


def available() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yml"))


def load_scenario(name_or_path: str, services: Sequence[str] | None = None) -> Scenario:
    path = resolve_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file; available by name: {available()}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    return parse_scenario(raw, str(path), path, services)
