"""Run a scenario against a target and prove it: Locust load, then scaling, alert, cost and no-loss checks.

    scripts/in-venv python -m loadtests.run --scenario surge
    scripts/in-venv python -m loadtests.run --scenario budget-breach --output-dir /tmp/bb
    scripts/in-venv python -m loadtests.run --list

Where the stack is reached comes from the inventory (``--inventory``, default inventories/local), as Ansible
evaluates it (roles/harness: ``harness_endpoints``, ``harness_kubeconfig``, ``harness_namespace``, the
``loadtest_*`` defaults): an option given on the command line wins. ``playbooks/loadtest.yml`` passes them all.
Exit codes: 0 every expectation held; 1 at least one did not (report written); 2 the run could not be made
(bad scenario, target not reachable or not at its baseline; a report with status ``aborted`` when possible).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loadtests import inventory as inventory_facts
from loadtests import scenario as scenario_mod
from loadtests.accounting import Accounting, JobPoller
from loadtests.alerts import AlertBook, WebhookReceiver
from loadtests.apiproxy import PodPortRelay, RelayError, ServiceRelay, cluster_service, with_address
from loadtests.audio import ensure_clips
from loadtests.budgets import BudgetEditor, store_from_spec
from loadtests.envelope import DEFAULT_INVENTORY, other_targets, policy_from_inventory
from loadtests.expectations import RunFacts, back_to_min_anchor, back_to_min_time, evaluate, series_increase
from loadtests.faults import FaultError, FaultRecord, Injector, check_runtime, run_schedule, runtime_from_args
from loadtests.ledger import LedgerTail
from loadtests.plot import draw
from loadtests.queueaudit import RedisQueues
from loadtests.queueaudit import audit as audit_queue
from loadtests.queueaudit import read as read_queue
from loadtests.report import build_report, summary, write_report
from loadtests.sampler import Sampler, ServiceTarget
from loadtests.scenario import Scenario, ScenarioError
from loadtests.sources import Alertmanager, Kube, Prometheus, SourceError
from loadtests.timeline import ReactionProbe, prometheus_points, threshold
from loadtests.timeline import extract as extract_timeline

REPO = Path(__file__).resolve().parents[1]
LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")


class Aborted(RuntimeError):
    """The run could not be made or had to stop early; the message says why."""


# What an option left out is, as the inventory says: option name -> the Jinja expression Ansible evaluates.
INVENTORY_DEFAULTS = {
    "target_name": "inventory_dir | basename",
    "state_dir": "harness_state_dir",
    "gateway_url": "harness_endpoints.gateway",
    "api_key_file": "harness_endpoints.api_key",
    "prometheus_url": "harness_endpoints.prometheus",
    "alertmanager_url": "harness_endpoints.alertmanager",
    "cost_config": "harness_endpoints.cost_config",
    "webhook_listen": "harness_loadtest_webhook_listen",
    "alert_evidence": "harness_loadtest_alert_evidence",
    "fault_runtime": "harness_loadtest_fault_runtime",
    "kubeconfig": "harness_kubeconfig",
    "namespace": "harness_namespace",
}
_PATHS = ("state_dir", "api_key_file", "kubeconfig")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scenario", default=scenario_mod.DEFAULT_SCENARIO, help="name in loadtests/scenarios or a path")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--target-name", help="a name for the report (default: the inventory's directory name)")
    p.add_argument("--state-dir", type=Path, help="default: the inventory's harness_state_dir")
    p.add_argument("--gateway-url",
                   help="an http(s) URL, or service:<namespace>/<name>:<port>: a Service reached through the API "
                        "server's service proxy with the kubeconfig only (loadtests/apiproxy.py); so are the next "
                        "two. Default (and for every address below): the inventory's harness_endpoints")
    p.add_argument("--api-key-file", type=Path, help="a file, or secret:<name>/<key> in --namespace")
    p.add_argument("--prometheus-url")
    p.add_argument("--alertmanager-url")
    p.add_argument(
        "--webhook-listen",
        help="host:port Alertmanager's webhook sends to (path /alerts); default: the inventory's "
        "harness_loadtest_webhook_listen (its loadtest-checker webhook)",
    )
    p.add_argument("--kubeconfig", type=Path, help="default: the inventory's harness_kubeconfig")
    p.add_argument(
        "--inventory",
        type=Path,
        default=DEFAULT_INVENTORY,
        help="the inventory whose HPA policy table and profile the policy judge holds the replicas to "
        "(default: %(default)s)",
    )
    p.add_argument("--namespace", help="the services' namespace; default: the inventory's harness_namespace")
    p.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="NAME:QUEUE",
        help="a model service (HPA and Deployment NAME) and its queue; default: the scenario's services, queue = name",
    )
    p.add_argument(
        "--pipeline",
        action="append",
        default=[],
        choices=sorted(scenario_mod.PIPELINES),
        help="a pipeline the target runs (dubbing: its orchestrator, harness_dubbing_enabled), loadable by a scenario",
    )
    p.add_argument(
        "--cost-config",
        help="cost exporter config for budget actions: a file, or configmap:<namespace>/<name>/<key>",
    )
    p.add_argument("--output-dir", type=Path, help="default: <state-dir>/loadtests/<scenario>-<UTC timestamp>")
    p.add_argument("--sample-interval", type=float, default=2.0, help="seconds between samples")
    p.add_argument(
        "--alert-evidence",
        choices=["webhook", "alertmanager"],
        help="what proves an alert fired and resolved: a notification at the checker's webhook, or "
        "Alertmanager's API, for clusters whose Alertmanager cannot reach the machine running the checker "
        "(default: the inventory's harness_loadtest_alert_evidence)",
    )
    p.add_argument(
        "--redis-url",
        help="Redis holding the queues (the reaction timeline, BullMQ's job record, worker-kill faults); "
        "default: the url in the namespace's Secret redis-auth; a cluster Service name (redis.<namespace>.svc) is "
        "reached through the API server (pods/portforward to a Ready pod behind it)",
    )
    p.add_argument("--queue-prefix", default="bull", help="BullMQ key prefix (default: %(default)s)")
    p.add_argument(
        "--fault-runtime",
        help="how worker kills and Redis/gateway restarts are done (default: the inventory's "
        "harness_loadtest_fault_runtime): kubernetes (exec in the worker's container, pod deletion), the only one",
    )
    p.add_argument("--redis-selector", default="app.kubernetes.io/name=redis", help="kubernetes runtime")
    p.add_argument("--gateway-selector", default="app.kubernetes.io/name=gateway", help="kubernetes runtime")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return p.parse_args(argv)


@dataclass
class Run:
    """The live state of one run; threads share it through its lock."""

    scenario: Scenario
    args: argparse.Namespace
    out: Path
    services: list[ServiceTarget]
    started: float = field(default_factory=time.time)
    anchors: dict[str, float] = field(default_factory=dict)
    actions_done: list[dict[str, Any]] = field(default_factory=list)
    faults_done: list[FaultRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, message: str) -> None:
        print(f"loadtests: {message}", flush=True)
        with self.lock:
            self.notes.append(message)


def _services(scenario: Scenario, specs: list[str]) -> list[ServiceTarget]:
    given = {}
    for spec in specs:
        name, _, queue = spec.partition(":")
        given[name] = ServiceTarget(name, queue or name)
    missing = [svc for svc in scenario.services if svc not in given]
    if given and missing:
        raise Aborted(
            f"--service names {sorted(given)}; the scenario loads {list(scenario.services)} too: "
            f"add --service for {missing}"
        )
    return [given.get(svc, ServiceTarget(svc, svc)) for svc in scenario.services]


def preflight(run: Run, kube: Kube, prom: Prometheus, am: Alertmanager, api_key: str) -> dict[str, Any]:
    """Check every address answers and the API key works; read the HPAs' bounds and time scale."""
    gw = run.args.gateway_url.rstrip("/")
    try:
        ready = httpx.get(f"{gw}/readyz", timeout=5)
        probe = httpx.get(f"{gw}/v1/jobs/stt-{'0' * 32}", headers={"X-API-Key": api_key}, timeout=5)
    except httpx.HTTPError as exc:
        raise Aborted(f"gateway {gw} does not answer: {exc}") from exc
    if ready.status_code != 200:
        raise Aborted(f"gateway {gw}/readyz answered {ready.status_code}: {ready.text[:200]}")
    if probe.status_code == 401:
        raise Aborted(f"gateway {gw} rejects the API key from {run.args.api_key_file}: {probe.text[:200]}")
    try:
        prom.ready()
        am.ready()
        hpas = {svc.name: kube.hpa(svc.name) for svc in run.services}
        for svc in run.services:
            kube.deployment(svc.name)
    except SourceError as exc:
        raise Aborted(str(exc)) from exc
    return hpas


GATEWAY_COUNTER = "sum by (service) (gateway_jobs_submitted_total)"
# How far before the run the gateway's raw samples are read, to tell a replica that ran before it (counted from its
# value at the start) from one born during it (counted from 0).
GATEWAY_LOOKBACK_S = 120
# BullMQ's own sets of finished jobs, as the queue exporter reads them. They are pruned by age
# (removeOnComplete/removeOnFail), so their rise is a lower bound of what finished: reported, not judged.
BULLMQ_FINISHED = "sum by (queue_name) (redis_queue_completed + redis_queue_failed)"


def gateway_counts(prom: Prometheus, expr: str = GATEWAY_COUNTER, label: str = "service") -> dict[str, float] | str:
    """The gateway's own count of accepted jobs per service (or another counter), or why it cannot be read."""
    try:
        values = prom.by_label(expr, label)
    except SourceError as exc:
        return str(exc)
    return values or f"Prometheus has no series for {expr}"


def counter_delta(before: dict[str, float] | str | None, after: dict[str, float] | str | None) -> dict | str | None:
    if before is None or after is None:
        return None
    if isinstance(before, str) or isinstance(after, str):
        return before if isinstance(before, str) else after
    if any(after.get(k, 0.0) < v for k, v in before.items()):
        return f"the counter went down (a gateway restart?): before {before}, after {after}"
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}


def wait_for_baseline(run: Run, sampler: Sampler, am_active: list[str], timeout_s: float) -> None:
    """Start from rest: every service at its HPA minimum with an empty queue, no expected alert active."""
    deadline = time.monotonic() + timeout_s
    reasons: list[str] = []
    while time.monotonic() < deadline:
        sample = sampler.latest()
        if sample is None:
            time.sleep(0.5)
            continue
        reasons = []
        for svc in run.services:
            row = sample["services"].get(svc.name, {})
            low = row.get("hpa_min")
            if row.get("ready") != low or row.get("hpa_desired") != low or row.get("replicas") != low:
                reasons.append(
                    f"{svc.name} at {row.get('ready')} ready / {row.get('replicas')} replicas "
                    f"(HPA desired {row.get('hpa_desired')}, min {low})"
                )
            if row.get("queue_depth") is None or row["queue_depth"] > 0:
                reasons.append(f"queue {svc.queue} depth {row.get('queue_depth')}")
        active = set(sample.get("alerts_active") or [])
        busy = sorted(k for k in active if k.split(" / ")[0] in am_active)
        if busy:
            reasons.append(f"alerts this scenario expects to fire are already active: {busy}")
        if sample.get("errors"):
            reasons.append(f"read errors: {sample['errors'][:2]}")
        if not reasons:
            return
        time.sleep(sampler.interval_s)
    raise Aborted(
        f"the target did not reach its baseline within {timeout_s:g} s (another test may be using "
        f"it): {'; '.join(reasons)}"
    )


def run_actions(run: Run, tail: LedgerTail, editor: BudgetEditor | None, stop: threading.Event) -> None:
    """Execute the scenario's actions at their times, counted from the load start."""
    pending = sorted(run.scenario.actions, key=lambda a: a.at_s)
    while pending and not stop.is_set():
        start = tail.poll().load_start
        if start is None:
            stop.wait(0.5)
            continue
        action = pending[0]
        wait = start + action.at_s - time.time()
        if wait > 0:
            stop.wait(min(wait, 0.5))
            continue
        pending.pop(0)
        entry: dict[str, Any] = {
            "name": action.name,
            "at_s": action.at_s,
            "t": time.time(),
            "what": action.describe(),
        }
        try:
            assert editor is not None, "budget actions need a cost config"
            if action.set_monthly_budget_usd:
                entry["budgets_before"] = editor.set_budgets(action.set_monthly_budget_usd)
            if action.restore_monthly_budget:
                entry["restored"] = editor.restore_services(action.restore_monthly_budget)
        except Exception as exc:  # the action's failure is reported; the run goes on and will fail on it
            entry["error"] = f"{type(exc).__name__}: {exc}"
        with run.lock:
            run.actions_done.append(entry)
            if "error" not in entry:
                run.anchors[action.name] = entry["t"]
        run.note(f"action {action.name} at +{entry['t'] - start:.1f} s: {entry.get('error') or entry['what']}")


def settled(
    run: Run, sampler: Sampler, book: AlertBook, hpa_min: dict[str, int], accounting: Accounting | None = None
) -> bool:
    """True once every after-load expectation has something to judge: services back at their minimum (for
    three samples), expected alerts resolved, every action done."""
    if len(run.actions_done) < len(run.scenario.actions) or len(run.faults_done) < len(run.scenario.faults):
        return False
    for rec in run.faults_done:
        fault = next(f for f in run.scenario.faults if f.name == rec.name)
        if fault.restore_after_s is not None and rec.restored_t is None and rec.restore_error is None:
            return False
    samples = sampler.snapshot()
    end = run.anchors.get("load_end")
    if end is None or not samples:
        return False
    for svc in run.scenario.expect.back_to_min:
        anchor, _ = back_to_min_anchor(run.scenario.expect.back_to_min_after.get(svc, "load_end"), end, accounting, svc)
        if anchor is None:
            return False
        since = back_to_min_time(samples, svc, hpa_min[svc], anchor)
        if since is None or samples[-1]["t"] - since < 3 * sampler.interval_s:
            return False
    records = book.snapshot()
    for exp in run.scenario.expect.alerts_fire:
        if exp.resolve_after is None:
            continue
        anchor = run.anchors.get(exp.after)
        if anchor is None:
            return False
        ev = run.args.alert_evidence
        if not any(
            exp.match.matches(r.labels) and (r.fired_at(ev) or 0) >= anchor - 1 and r.resolved_at(ev) for r in records
        ):
            return False
    return True


def mt_target_language(table: list[dict[str, Any]]) -> str:
    """The language the mt users ask for: the first of the inventory's mt service's MT_TARGET_LANGUAGES."""
    for svc in table:
        if svc.get("queue_type", svc.get("name")) == "mt":
            langs = str((svc.get("env") or {}).get("MT_TARGET_LANGUAGES") or "").split(",")
            if langs[0].strip():
                return langs[0].strip()
    return "de"


def _locust(run: Run, ledger: Path, key_file: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "LOADTEST_SCENARIO": str(run.scenario.path),
        "LOADTEST_SERVICES": ",".join(run.args.loadable),
        "LOADTEST_LEDGER": str(ledger),
        "LOADTEST_API_KEY_FILE": str(key_file),
        "LOADTEST_MT_TARGET_LANGUAGE": getattr(run.args, "mt_target", "de"),
        "HARNESS_STATE_DIR": str(run.args.state_dir),
    }
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        run.args.gateway_url,
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "15",
        "--csv",
        str(run.out / "locust"),
        "--html",
        str(run.out / "locust.html"),
    ]
    log = (run.out / "locust.log").open("wb")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)  # noqa: S603


def resolve_target(args: argparse.Namespace, value: Any = inventory_facts.ansible_value) -> argparse.Namespace:
    """Fill every option left out from the inventory, in one evaluation by Ansible (``value``); options given on
    the command line are kept. Nothing is asked when every option is given (playbooks/loadtest.yml)."""
    missing = {name: expr for name, expr in INVENTORY_DEFAULTS.items() if getattr(args, name) is None}
    if missing:
        expr = "{" + ", ".join(f"{name!r}: {e}" for name, e in missing.items()) + "}"
        try:
            answers = value(expr, args.inventory)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            raise Aborted(f"--inventory {args.inventory}: cannot read where the stack is ({', '.join(missing)}); "
                          f"give them as options or fix the inventory: {exc}") from None
        for name in missing:
            got = answers.get(name) if isinstance(answers, dict) else None
            if got in (None, ""):
                raise Aborted(f"--inventory {args.inventory}: {INVENTORY_DEFAULTS[name]} is empty; "
                              f"give --{name.replace('_', '-')}")
            setattr(args, name, Path(got) if name in _PATHS else str(got))
    # From the command line or the inventory alike: refused before anything runs, naming the value.
    try:
        check_runtime(args.fault_runtime)
    except FaultError as exc:
        raise Aborted(str(exc)) from None
    return args


def target_loadable(inventory: Path, service_specs: list[str], pipelines: list[str]
                    ) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """The inventory's service table and what a scenario may load on the target: its enabled services with a load
    user, and the ``pipelines`` it runs (--pipeline) whose stages are among them. --service names the target's
    enabled services as the play sees them (loadtest.yml: harness_services, an -e file included): those are the
    enabled ones; without it the inventory's files say."""
    named = {spec.partition(":")[0] for spec in service_specs}
    try:
        table = inventory_facts.services(inventory, enabled_only=False)
        if named:
            table = [{**s, "enabled": s.get("name") in named} for s in table]
        loadable = scenario_mod.loadable_services(table, pipelines)
    except (OSError, KeyError, ValueError) as exc:
        raise Aborted(f"--inventory {inventory}: cannot read its service table: {exc}") from None
    return table, loadable


def execute(args: argparse.Namespace) -> int:
    resolve_target(args)
    # The services a scenario may load: the inventory's enabled services with a load user, those named by
    # --service when the caller names the target's services.
    table, args.loadable = target_loadable(args.inventory, args.service, args.pipeline)
    args.mt_target = mt_target_language(table)
    scenario = scenario_mod.load_scenario(args.scenario, args.loadable)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.output_dir or args.state_dir / "loadtests" / f"{scenario.name}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    run = Run(scenario, args, out, _services(scenario, args.service))
    print(f"loadtests: scenario {scenario.name} -> {out}", flush=True)
    target = {
        "name": args.target_name,
        "gateway_url": args.gateway_url,
        "prometheus_url": args.prometheus_url,
        "alertmanager_url": args.alertmanager_url,
        "webhook": f"http://{args.webhook_listen}/alerts",
        "alert_evidence": args.alert_evidence,
        "kubeconfig": str(args.kubeconfig),
        "namespace": args.namespace,
        "services": {s.name: s.queue for s in run.services},
    }

    ledger_path = out / "jobs.jsonl"
    tail = LedgerTail(ledger_path)
    book = AlertBook()
    editor: BudgetEditor | None = None
    receiver: WebhookReceiver | None = None
    sampler: Sampler | None = None
    locust: subprocess.Popen | None = None
    stop_actions = threading.Event()
    actions_thread: threading.Thread | None = None
    accounting: Accounting | None = None
    hpa_bounds: dict[str, tuple[int, int]] = {}
    time_scale: dict[str, int] = {}
    aborted: str | None = None
    gw_before: dict[str, float] | str | None = None
    webhook_error: str | None = None
    bull_before: dict[str, float] | str | None = None
    prom: Prometheus | None = None
    kube: Kube | None = None
    queues: RedisQueues | None = None
    queues_error: str | None = None
    probe: ReactionProbe | None = None
    injector: Injector | None = None
    faults_thread: threading.Thread | None = None
    hpas: dict[str, Any] = {}
    relays: list[ServiceRelay | PodPortRelay] = []
    try:
        kube = Kube(str(args.kubeconfig), args.namespace)
        api_key = _api_key(args.api_key_file, kube)
        relays = _relays(kube, args)
        prom, am = Prometheus(args.prometheus_url), Alertmanager(args.alertmanager_url)
        hpas = preflight(run, kube, prom, am, api_key)
        hpa_bounds = {n: (h.min_replicas, h.max_replicas) for n, h in hpas.items()}
        try:
            redis_url = args.redis_url or kube.secret_value("redis-auth", "url")
            internal = cluster_service(redis_url)
            if internal is not None:  # a cluster Service name: reached through the API server (pods/portforward)
                redis_relay = PodPortRelay.for_service(kube.core, *internal)
                relays.append(redis_relay)
                redis_url = with_address(redis_url, *redis_relay.address)
                print(f"loadtests: Redis {internal[0]}/{internal[1]}:{internal[2]} through pods/portforward at "
                      f"{redis_relay.address[0]}:{redis_relay.address[1]}", flush=True)
            queues = RedisQueues(redis_url, args.queue_prefix)
            queues.depth([svc.queue for svc in run.services])
        except Exception as exc:  # the timeline's first hop and BullMQ's record are then reported as unreadable
            queues, queues_error = None, f"Redis not readable: {type(exc).__name__}: {exc}"
            run.note(queues_error)
        if scenario.faults:
            if queues is None:
                raise Aborted(f"faults need Redis (active jobs, persistence): {queues_error}")
            if any(f.kind == "restart_redis" for f in scenario.faults):
                try:
                    why = queues.persistence()
                except Exception as exc:
                    why = None
                    run.note(f"could not read Redis' persistence settings ({exc}); restarting it anyway")
                if why:
                    raise Aborted(f"restart_redis needs persistence on: {why}")
            runtime = runtime_from_args(
                args.fault_runtime,
                kube.core,
                args.namespace,
                {"redis": args.redis_selector, "gateway": args.gateway_selector},
            )
            injector = Injector(
                kube, runtime, {s.name: s.queue for s in run.services}, queues, worker_ready=kube.readyz
            )
        time_scale = {n: h.time_scale for n, h in hpas.items()}
        if scenario.budget_services():
            editor = BudgetEditor(store_from_spec(args.cost_config, kube))
            restored = editor.recover()
            if restored:
                run.note(restored)
            missing = scenario.budget_services() - set(editor.budgets())
            if missing:
                raise Aborted(f"cost config {editor.store.describe()} has no service(s) {sorted(missing)}")
        host, _, port = args.webhook_listen.rpartition(":")
        try:
            receiver = WebhookReceiver.start(book, host or "127.0.0.1", int(port))
        except OSError as exc:
            # The run goes on: expectations that need the webhook fail naming this, the rest are judged.
            webhook_error = str(exc)
            run.note(f"no webhook receiver: {exc}")
        sampler = Sampler(run.services, kube, prom, am, book, tail, args.sample_interval)
        sampler.start()
        wait_for_baseline(
            run,
            sampler,
            [a.match.alertname for a in scenario.expect.alerts_fire],
            scenario.timeouts.baseline_s,
        )
        gw_before = gateway_counts(prom)
        bull_before = gateway_counts(prom, BULLMQ_FINISHED, "queue_name")
        run.anchors["run_start"] = time.time()
        run.note(f"baseline reached after {run.anchors['run_start'] - run.started:.0f} s")
        if "stt" in scenario.services:
            ensure_clips(scenario.load.phrases)
        run.note(
            f"starting {scenario.load.duration_s:g} s of load "
            f"({', '.join(f'{s.name}: {s.users} users' for s in scenario.load.stages)})"
        )
        probe = _probe(run, kube, queues, hpas)
        if probe is not None:
            probe.start()
        locust = _locust(run, ledger_path, _key_file_for_locust(args.api_key_file, api_key, out))
        if injector is not None:
            faults_thread = threading.Thread(
                target=run_schedule,
                args=(scenario.faults, injector, lambda: tail.poll().load_start, stop_actions, run.faults_done),
                kwargs={"on_event": run.note, "lock": run.lock},
                name="faults",
                daemon=True,
            )
            faults_thread.start()
        actions_thread = threading.Thread(
            target=run_actions, args=(run, tail, editor, stop_actions), name="actions", daemon=True
        )
        actions_thread.start()
        locust_deadline = time.monotonic() + scenario.load.duration_s + 120
        while locust.poll() is None:
            if time.monotonic() > locust_deadline:
                locust.terminate()
                raise Aborted(f"Locust still running {scenario.load.duration_s + 120:g} s after start; stopped")
            time.sleep(1)
        state = tail.poll()
        if state.load_start is None:
            raise Aborted(
                f"Locust exited with code {locust.returncode} before the load started; see {out / 'locust.log'}"
            )
        run.anchors["load_start"] = state.load_start
        run.anchors["load_end"] = state.load_stop or time.time()
        jobs = state.jobs
        run.note(
            f"load ended: {len(jobs)} jobs accepted, {len(state.submissions) - len(jobs)} submissions "
            f"rejected; waiting for every job to finish (up to {scenario.timeouts.drain_s:g} s)"
        )
        poller = JobPoller(args.gateway_url, api_key)
        accounting = poller.drain(jobs, scenario.timeouts.drain_s)
        counts = accounting.counts()
        run.note(f"jobs: completed {counts['completed']}, failed {counts['failed']}, lost {counts['lost']}")
        factor = max(scenario.written_for_time_scale / time_scale.get(s, 1) for s in scenario.services)
        # settle_s counts from the load end, or from the drain's end when a back_to_min counts from the last job.
        from_drain = "drained" in scenario.expect.back_to_min_after.values()
        settle_from = time.time() if from_drain else run.anchors["load_end"]
        settle_deadline = settle_from + scenario.timeouts.settle_s * factor
        mins = {n: b[0] for n, b in hpa_bounds.items()}
        while time.time() < settle_deadline and not settled(run, sampler, book, mins, accounting):
            time.sleep(sampler.interval_s)
        if not settled(run, sampler, book, mins, accounting):
            run.note(
                f"stopped waiting for scale-down/alert resolution at the settle limit "
                f"({scenario.timeouts.settle_s * factor:g} s after {'the drain' if from_drain else 'load end'})"
            )
    except Aborted as exc:
        aborted = str(exc)
        print(f"loadtests: ABORTED: {aborted}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        aborted = "interrupted"
        print("loadtests: interrupted; cleaning up", file=sys.stderr, flush=True)
    except Exception as exc:  # a checker bug still ends with a report saying what broke
        aborted = f"checker error: {type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        stop_actions.set()
        if locust is not None and locust.poll() is None:
            locust.terminate()
            try:
                locust.wait(timeout=20)
            except subprocess.TimeoutExpired:
                locust.kill()
        if actions_thread is not None:
            actions_thread.join(timeout=10)
        if faults_thread is not None:
            faults_thread.join(timeout=30)
        if injector is not None:
            for line in injector.restore_all():
                run.note(line)
        if probe is not None:
            probe.stop()
        if sampler is not None:
            sampler.stop()
        if receiver is not None:
            receiver.stop()
        for relay in relays:
            relay.stop()
        (out / "api-key").unlink(missing_ok=True)  # the Secret's key, written for Locust only for the run
        if editor is not None:
            try:
                if editor.restore_all():
                    run.note(f"restored the original {editor.store.describe()}")
            except Exception as exc:
                run.note(f"COULD NOT restore {editor.store.describe()}: {exc}; its backup is kept")
    run_end = time.time()
    gateway_submitted = counter_delta(gw_before, gateway_counts(prom) if prom is not None and gw_before else None)
    bullmq_finished = counter_delta(
        bull_before,
        gateway_counts(prom, BULLMQ_FINISHED, "queue_name") if prom is not None and bull_before else None,
    )
    if bullmq_finished is not None:
        run.note(f"BullMQ's finished sets rose by {bullmq_finished} (a lower bound: pruned by age)")
    gateway_resets: list[dict[str, Any]] = []
    restarted = any(r.kind == "restart_gateway" for r in run.faults_done)
    if prom is not None and isinstance(gw_before, dict) and (restarted or isinstance(gateway_submitted, str)):
        # A restart (or a replaced replica) reset a counter: its rise comes from the raw samples, series by series.
        gateway_submitted, gateway_resets = _gateway_across_restarts(prom, run, run_end, gateway_submitted)
    queue_audit: dict[str, Any] | str | None = None
    if accounting is not None and accounting.outcomes:
        if queues is None:
            queue_audit = queues_error
        else:
            try:
                ids = {o.job_id: o.service for o in accounting.outcomes.values()}
                # A pipeline's stage jobs too: each must complete exactly once in its stage's queue.
                for o in accounting.outcomes.values():
                    ids.update(o.stage_jobs())
                raw = read_queue(
                    queues.redis,
                    args.queue_prefix,
                    {s.name: s.queue for s in run.services} | {p: p for p in scenario.pipelines},
                    ids,
                    int(run.anchors.get("run_start", run.started) * 1000),
                )
                queue_audit = audit_queue(raw, ids)
            except Exception as exc:
                queue_audit = f"{type(exc).__name__}: {exc}"
        run.note(
            f"BullMQ's record: {queue_audit}"
            if isinstance(queue_audit, str)
            else f"BullMQ's record: {queue_audit['completed_once']} of {queue_audit['jobs']} completed exactly "
            f"once, runs per job {queue_audit['jobs_by_runs']}"
        )
    policies, targets = {}, {}
    for svc in scenario.services:
        try:
            policies[svc] = policy_from_inventory(svc, args.inventory)
            targets[svc] = other_targets(svc, args.inventory)
        except (OSError, KeyError, ValueError) as exc:
            run.note(f"no inventory policy for {svc} ({args.inventory}): {exc}")
    facts = RunFacts(
        scenario,
        # The timeline starts when the baseline was reached (the wait for it is in the notes), or holds every
        # sample when the run never got that far.
        [s for s in (sampler.snapshot() if sampler else []) if s["t"] >= run.anchors.get("run_start", 0) - 4],
        tail.poll(),
        accounting,
        book.snapshot(),
        dict(run.anchors),
        time_scale,
        hpa_bounds,
        run_end,
        locust.returncode if locust else None,
        args.alert_evidence,
        policies=policies,
        other_targets=targets,
        gateway_submitted=gateway_submitted,
        sample_interval_s=args.sample_interval,
        webhook_error=webhook_error,
        faults=list(run.faults_done),
        queue_audit=queue_audit,
        gateway_resets=gateway_resets,
    )
    results = evaluate(facts)
    png = None if args.no_plot else out / "timeline.png"
    report = build_report(facts, results, target, run.started, run.actions_done, str(png) if png else None, run.notes)
    report["jobs"]["bullmq_finished"] = bullmq_finished
    report["jobs"]["bullmq"] = queue_audit
    report["faults"] = [r.to_json(run.anchors.get("load_start")) for r in run.faults_done]
    report["reaction"] = _reaction(run, probe, sampler, prom, kube, policies, accounting, run_end, queues_error)
    if aborted:
        report["status"], report["passed"], report["aborted"] = "aborted", False, aborted
    write_report(report, out / "report.json")
    if png is not None:
        try:
            draw(report, png)
        except Exception as exc:  # a plot failure must not hide the verdict
            print(f"loadtests: could not draw {png}: {type(exc).__name__}: {exc}", file=sys.stderr)
            png = None
            report["plot"] = None
            write_report(report, out / "report.json")
    print()
    print(summary(report))
    if aborted:
        print(f"\nABORTED: {aborted}")
    print(f"\nreport: {out / 'report.json'}")
    if png is not None:
        print(f"timeline: {png}")
    if aborted:
        return 2
    return 0 if report["passed"] else 1


def _probe(run: Run, kube: Kube, queues: RedisQueues | None, hpas: dict[str, Any]) -> ReactionProbe | None:
    """The reaction timeline's poller: Redis, the external metrics API, the pods and their workers' /readyz."""
    if queues is None:
        return None
    metric = {
        svc.name: hpas[svc.name].external_metric or ("redis_queue_depth", {"queue_name": svc.queue})
        for svc in run.services
    }
    return ReactionProbe(
        {s.name: s.queue for s in run.services},
        queues.depth,
        lambda svc: kube.external_metric(*metric[svc]),
        kube.pods,
        kube.readyz,
    )


def _reaction(
    run: Run,
    probe: ReactionProbe | None,
    sampler: Sampler | None,
    prom: Prometheus | None,
    kube: Kube | None,
    policies: dict[str, Any],
    accounting: Accounting | None,
    run_end: float,
    queues_error: str | None,
) -> dict[str, Any]:
    """report.json's ``reaction``: per service the timeline of its first scale-up, and the probe's raw reads."""
    start = run.anchors.get("load_start")
    if probe is None or start is None:
        return {"error": queues_error or "the load never started", "services": {}}
    record = probe.record()
    samples = sampler.snapshot() if sampler else []
    jobs = [
        {"worker": o.worker, "finished_at": o.finished_at, "state": o.state}
        for o in (accounting.outcomes.values() if accounting else [])
    ]
    out: dict[str, Any] = {}
    for svc in run.services:
        try:
            if svc.name not in policies:
                raise ValueError("no inventory policy for the threshold")
            policy, timing = policies[svc.name]
            limit = threshold(policy.min_replicas, policy.target_per_pod, policy.tolerance)
            window = max(1, int(run_end - start + 30))
            try:
                assert prom is not None
                points: Any = prometheus_points(
                    prom.matrix(f'redis_queue_depth{{queue_name="{svc.queue}"}}[{window}s]', run_end)
                )
            except (SourceError, AssertionError) as exc:
                points = f"{exc}"
            try:
                events = kube.hpa_events(svc.name) if kube is not None else []
            except SourceError as exc:
                events = []
                run.note(f"no HPA events for the timeline: {exc}")
            out[svc.name] = extract_timeline(
                svc.name,
                limit,
                policy.min_replicas,
                start,
                record,
                samples,
                points,
                [j for j in jobs if j["state"] == "completed"],
                events,
                scrape_interval_s=timing.lag_s[1] - 0.5,
            )
        except Exception as exc:  # the report is written whatever the extraction meets
            out[svc.name] = {"error": f"{type(exc).__name__}: {exc}"}
    return {"services": out, "probe": record}


def _gateway_across_restarts(
    prom: Prometheus, run: Run, run_end: float, fallback: Any
) -> tuple[dict[str, float] | str, list[dict[str, Any]]]:
    """The gateway's count of accepted jobs from its raw samples, per series (replica) and across the resets a
    restart causes (expectations.series_increase); the samples reach back before the run to find each series' start."""
    since = run.anchors.get("run_start", run.started)
    window = max(1, int(run_end - since + GATEWAY_LOOKBACK_S))
    try:
        series = prom.matrix(f"gateway_jobs_submitted_total[{window}s]", run_end)
    except SourceError as exc:
        return f"{exc}", []
    counts, resets = series_increase(series, since, run_end)
    return (counts or fallback), resets


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _api_key(source: Path, kube: Kube) -> str:
    """The gateway API key: a file, or secret:<name>/<key> in the namespace (the cluster path's gateway-api-key)."""
    text = str(source)
    if text.startswith("secret:"):
        name, _, key = text.removeprefix("secret:").partition("/")
        if not name or not key:
            raise Aborted(f"--api-key-file {text!r}: allowed is a file or secret:<name>/<key>")
        try:
            return kube.secret_value(name, key).strip()
        except (SourceError, KeyError) as exc:
            raise Aborted(f"cannot read the gateway API key from {text}: {exc}") from exc
    try:
        return source.read_text().strip()
    except OSError as exc:
        raise Aborted(f"cannot read the gateway API key from {source}: {exc}") from exc


def _key_file_for_locust(source: Path, api_key: str, out: Path) -> Path:
    """Locust reads the key from a file: the given one, or (a key from a Secret) one of the run's own, mode 0600."""
    if not str(source).startswith("secret:"):
        return source
    path = out / "api-key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(api_key + "\n")
    return path


def _relays(kube: Kube, args: argparse.Namespace) -> list[ServiceRelay]:
    """A loopback relay through the API server for each of the gateway, Prometheus and Alertmanager given as a
    service reference (service:<namespace>/<name>:<port>); args then hold the relays' URLs."""
    relays = []
    for attr in ("gateway_url", "prometheus_url", "alertmanager_url"):
        ref = getattr(args, attr)
        if not ref.startswith("service:"):
            continue
        try:
            relay = ServiceRelay.start(kube.api_client, ref)
        except RelayError as exc:
            raise Aborted(f"--{attr.replace('_', '-')}: {exc}") from exc
        relays.append(relay)
        setattr(args, attr, relay.url)
        print(f"loadtests: {ref} through the API server at {relay.url}", flush=True)
    return relays


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name in scenario_mod.available():
            print(f"{name:16} {scenario_mod.load_scenario(name).description.splitlines()[0][:90]}")
        return 0
    # SIGTERM (ansible timeout, CI cancel) unwinds like Ctrl-C so budgets are restored and Locust stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return execute(args)
    except ScenarioError as exc:
        print(f"loadtests: invalid scenario: {exc}", file=sys.stderr)
        return 2
    except Aborted as exc:
        print(f"loadtests: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
