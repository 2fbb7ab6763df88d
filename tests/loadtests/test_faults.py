"""Faults declared in a scenario: their validation, their schedule, the injectors (against fakes of the
Kubernetes API), the expectations and the report; and BullMQ's own record of
every job (a private redis-server, real BullMQ producers and workers) that "exactly once" is judged on."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
import uuid

import pytest
import redis

from loadtests import faults as faults_mod
from loadtests import queueaudit
from loadtests.expectations import counter_increase, evaluate, series_increase
from loadtests.faults import Fault, FaultRecord, Injector, run_schedule, schedule
from loadtests.report import build_report, summary
from loadtests.scenario import ScenarioError, load_scenario, parse_scenario
from tests.loadtests.test_loadtest_checker import T0, by_name, facts

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BASE = {
    "name": "unit",
    "load": {
        "stages": [{"name": "surge", "duration_s": 60, "users": 6, "spawn_rate": 2}],
        "wait_s": [1, 2],
        "mix": {"stt": 1, "tts": 1},
    },
    "expect": {},
}


def scenario_with(faults, **extra):
    return parse_scenario({**BASE, "faults": faults, **extra}, "unit.yml")


# ------------------------------------------------------------------------------------------- scenario files


def test_chaos_scenario_declares_every_fault_kind():
    chaos = load_scenario("chaos")
    assert {f.kind for f in chaos.faults} == set(faults_mod.KINDS)
    squeeze = next(f for f in chaos.faults if f.kind == "lower_hpa_max")
    assert squeeze.service == "stt" and squeeze.max_replicas == 3 and squeeze.restore_after_s == 20
    assert chaos.expect.jobs.max_lost == 0 and chaos.expect.jobs.max_failed == 0
    # Every fault lands while the load runs.
    assert all(f.at_s + (f.restore_after_s or 0) < chaos.load.duration_s for f in chaos.faults)


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        ([{"name": "x", "at_s": 1, "kind": "reboot"}], "faults[0].kind: unknown fault kind 'reboot'"),
        ([{"name": "x", "at_s": 1, "kind": "kill_worker"}], "faults[0]: kind kill_worker needs a service"),
        ([{"name": "x", "at_s": 1, "kind": "restart_redis", "service": "stt"}], "kind restart_redis takes no service"),
        ([{"name": "x", "at_s": 1, "kind": "lower_hpa_max", "service": "stt"}], "needs max_replicas"),
        (
            [{"name": "x", "at_s": 1, "kind": "delete_pod", "service": "stt", "restore_after_s": 3}],
            "only kind lower_hpa_max takes restore_after_s",
        ),
        (
            [
                {"name": "x", "at_s": 1, "kind": "delete_pod", "service": "stt"},
                {"name": "x", "at_s": 2, "kind": "restart_gateway"},
            ],
            "faults[1].name: 'x' is already used",
        ),
        ([{"name": "load_end", "at_s": 1, "kind": "restart_gateway"}], "is already used"),
        ([{"name": "x", "at_s": -1, "kind": "restart_gateway"}], "faults[0].at_s: must be at least 0"),
    ],
)
def test_bad_faults_are_refused_naming_the_key(faults, message):
    with pytest.raises(ScenarioError, match=message.replace("(", r"\(").replace("[", r"\[").replace("]", r"\]")):
        scenario_with(faults)


def test_fault_names_are_alert_anchors():
    scen = scenario_with(
        [{"name": "restart-redis", "at_s": 10, "kind": "restart_redis"}],
        expect={"alerts_fire": [{"alertname": "QueueDown", "after": "restart-redis", "within_s": 30}]},
    )
    assert scen.expect.alerts_fire[0].after == "restart-redis"


def test_schedule_orders_injections_and_restores():
    fs = (
        Fault("b", 20, "restart_redis"),
        Fault("a", 10, "lower_hpa_max", "stt", 3, 10),
        Fault("c", 5, "delete_pod", "tts"),
    )
    assert [(t, what, f.name) for t, what, f in schedule(fs)] == [
        (5, "inject", "c"),
        (10, "inject", "a"),
        (20, "restore", "a"),  # a restore comes before an injection at the same time
        (20, "inject", "b"),
    ]


# ---------------------------------------------------------------------------------------------- injectors


def pod(name, phase="Running", deleting=False):
    meta = {"name": name, "annotations": {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T01:00:00Z"
    return {"metadata": meta, "spec": {"containers": [{"name": "worker"}]}, "status": {"phase": phase}}


class FakeCluster:
    def __init__(self, pods=None, hpa_max=8):
        self._pods = pods or {}
        self.max = {"stt": hpa_max, "tts": hpa_max}
        self.calls = []

    def pods(self, service):
        return self._pods.get(service, [])

    def delete_pod(self, name):
        self.calls.append(("delete", name, time.time()))

    def hpa_max(self, service):
        return self.max[service]

    def set_hpa_max(self, service, value):
        self.calls.append(("hpa_max", service, value, time.time()))
        self.max[service] = value


class FakeRuntime:
    name = "fake"

    def __init__(self):
        self.calls = []

    def kill_worker(self, p):
        self.calls.append(("kill", p["metadata"]["name"]))
        return f"killed {p['metadata']['name']}"

    def restart(self, component):
        self.calls.append(("restart", component))
        return f"{component} restarted"


class FakeQueues:
    def __init__(self, active):
        self.values = list(active)

    def active(self, queue):
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


def test_faults_run_at_their_times_and_the_lowered_maximum_comes_back():
    cluster = FakeCluster(
        {
            "stt": [pod("stt-a"), pod("stt-b"), pod("stt-c", deleting=True)],
            "tts": [pod("tts-a"), pod("tts-p", phase="Pending")],
        }
    )
    runtime = FakeRuntime()
    inj = Injector(cluster, runtime, {"stt": "stt", "tts": "tts"}, FakeQueues([2]))
    fs = (
        Fault("kill", 0.1, "kill_worker", "stt"),
        Fault("delete", 0.2, "delete_pod", "tts"),
        Fault("squeeze", 0.3, "lower_hpa_max", "stt", 3, 0.3),
        Fault("redis", 0.4, "restart_redis"),
        Fault("gateway", 0.5, "restart_gateway"),
    )
    records: list[FaultRecord] = []
    notes: list[str] = []
    start = time.time()
    run_schedule(fs, inj, lambda: start, threading.Event(), records, notes.append)
    assert [r.name for r in records] == ["kill", "delete", "squeeze", "redis", "gateway"]
    for r, f in zip(records, fs, strict=True):
        assert r.error is None, r
        assert f.at_s - 0.01 <= r.t - start <= f.at_s + 0.4
    assert runtime.calls[0][1] in ("stt-a", "stt-b")  # never the terminating pod
    assert cluster.calls[0][:2] == ("delete", "tts-a")  # the only running tts pod
    assert records[1].target == "tts-a"
    lowered, restored = [c for c in cluster.calls if c[0] == "hpa_max"]
    assert lowered[1:3] == ("stt", 3) and restored[1:3] == ("stt", 8)
    assert 0.55 <= restored[3] - start <= 1.0
    assert records[2].detail == "maxReplicas 8 -> 3" and records[2].restore_detail == "maxReplicas -> 8"
    assert runtime.calls[1:] == [("restart", "redis"), ("restart", "gateway")]
    assert "2 active job(s) for 2 ready worker(s)" in records[0].detail
    assert any(n.startswith("fault squeeze restored at +0.6 s") or "restored at +0." in n for n in notes)
    assert inj.restore_all() == []


def test_a_worker_is_killed_only_once_every_worker_holds_a_job():
    cluster = FakeCluster({"stt": [pod("stt-a"), pod("stt-b")]})
    now = [100.0]
    inj = Injector(
        cluster,
        FakeRuntime(),
        {"stt": "stt"},
        FakeQueues([0, 1, 1, 2]),
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    rec = inj.inject(Fault("kill", 0, "kill_worker", "stt"))
    assert rec.error is None and rec.t == pytest.approx(100.75)
    assert "2 active job(s) for 2 ready worker(s)" in rec.detail
    # Without a backlog it gives up waiting after mid_job_wait_s and says so.
    inj = Injector(
        cluster,
        FakeRuntime(),
        {"stt": "stt"},
        FakeQueues([0]),
        mid_job_wait_s=2,
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    rec = inj.inject(Fault("kill", 0, "kill_worker", "stt"))
    assert "not every worker held a job" in rec.detail


def test_a_failed_fault_is_recorded_and_a_lowered_maximum_is_restored_at_the_end():
    class Broken(FakeRuntime):
        def restart(self, component):
            raise faults_mod.FaultError("no pod matches app.kubernetes.io/name=redis in model-serving")

    cluster = FakeCluster({"stt": []})
    inj = Injector(cluster, Broken(), {"stt": "stt"}, FakeQueues([0]))
    rec = inj.inject(Fault("redis", 0, "restart_redis"))
    assert rec.error.startswith("FaultError: no pod matches app.kubernetes.io/name=redis") and rec.t is not None
    assert "no running pod of stt" in inj.inject(Fault("d", 0, "delete_pod", "stt")).error
    inj.inject(Fault("squeeze", 0, "lower_hpa_max", "stt", 2, 30))
    assert cluster.max["stt"] == 2
    assert inj.restore_all() == ["stt HPA maxReplicas restored to 8"]
    assert cluster.max["stt"] == 8


def test_only_the_kubernetes_runtime_is_made_and_host_is_refused_by_name():
    made = faults_mod.runtime_from_args("kubernetes", object(), "model-serving")
    assert isinstance(made, faults_mod.KubernetesRuntime)
    with pytest.raises(faults_mod.FaultError, match=r"fault runtime 'host' .* is invalid: allowed is kubernetes "
                                                   r"\(the host runtime went with the retired host-process path"):
        faults_mod.runtime_from_args("host", object(), "model-serving")
    with pytest.raises(faults_mod.FaultError, match=r"fault runtime 'docker' .* is invalid: allowed is kubernetes$"):
        faults_mod.check_runtime("docker")


class FakeCore:
    """read_namespaced_pod of a worker pod whose container restart count follows a script."""

    def __init__(self, restarts):
        self.restarts, self.reads = list(restarts), 0
        self.api_client = self

    def read_namespaced_pod(self, name, namespace, **kw):
        count = self.restarts[min(self.reads, len(self.restarts) - 1)]
        self.reads += 1
        status = {"name": "worker", "restartCount": count}
        if count:
            status["lastState"] = {"terminated": {"exitCode": 137, "reason": "Error"}}
        return {"metadata": {"name": name}, "status": {"containerStatuses": [status]}}

    def sanitize_for_serialization(self, obj):
        return obj


def k8s_pod(name, share=True, restarts=0):
    p = pod(name)
    p["spec"]["shareProcessNamespace"] = share
    p["status"]["containerStatuses"] = [{"name": "worker", "restartCount": restarts}]
    return p


def k8s_runtime(core, exec_result=(0, "")):
    calls, now = [], [0.0]

    def exec_fn(c, namespace, pod_name, container, command):
        calls.append((namespace, pod_name, container, command))
        return exec_result

    rt = faults_mod.KubernetesRuntime(core, "model-serving", exec_fn=exec_fn, clock=lambda: now[0],
                                      sleep=lambda s: now.__setitem__(0, now[0] + s), restart_wait_s=5)
    return rt, calls


def test_kubernetes_runtime_kills_the_worker_and_waits_for_the_kubelets_restart():
    """kill -KILL -1 reaches the worker of a pod that shares its PID namespace; the fault is done only when the
    kubelet reports the container restarted (on the real node this is the worker's exit 137)."""
    rt, calls = k8s_runtime(FakeCore([0, 0, 1]))
    detail = rt.kill_worker(k8s_pod("stt-a"))
    assert calls == [("model-serving", "stt-a", "worker", ["sh", "-c", "kill -KILL -1"])]
    assert "exited 137" in detail and "restartCount 0 -> 1" in detail


def test_kubernetes_runtime_fails_when_the_worker_survives():
    """Before: `kill -KILL 1` was exec'd and reported done whatever happened; a worker that is its container's
    PID 1 ignores it, so chaos "killed" a worker that never stopped."""
    rt, _ = k8s_runtime(FakeCore([2]))
    with pytest.raises(faults_mod.FaultError, match=r"no restart of container worker within 5 s \(restartCount "
                                                    r"stayed 2\): the worker survived"):
        rt.kill_worker(k8s_pod("stt-a", restarts=2))
    rt, calls = k8s_runtime(FakeCore([0]))
    with pytest.raises(faults_mod.FaultError, match="shareProcessNamespace is not set"):
        rt.kill_worker(k8s_pod("stt-b", share=False))
    assert calls == []  # refused before anything is sent
    rt, _ = k8s_runtime(FakeCore([0]), exec_result=(None, 'exec: "sh": executable file not found in $PATH'))
    with pytest.raises(faults_mod.FaultError, match='the worker survived; sh -c kill -KILL -1 could not run: '
                                                    'exec: "sh": executable file not found'):
        rt.kill_worker(k8s_pod("stt-c"))
    rt, _ = k8s_runtime(FakeCore([0]), exec_result=(1, "sh: 1: kill: No such process"))
    with pytest.raises(faults_mod.FaultError, match="survived; sh -c kill -KILL -1 exited 1: sh: 1: kill: No such"):
        rt.kill_worker(k8s_pod("stt-d"))


def test_kubernetes_runtime_takes_the_restart_as_evidence_not_the_shells_status():
    """The shell is in the container it empties: killed with it, it may report 137 or nothing."""
    for result in ((137, ""), (None, "no exit status (timed out?)")):
        rt, _ = k8s_runtime(FakeCore([0, 1]), exec_result=result)
        assert "restartCount 0 -> 1" in rt.kill_worker(k8s_pod("stt-a"))


# ---------------------------------------------------------------------------------- judged and reported


def chaos_facts(tmp_path, records, **kw):
    scen = scenario_with(
        [
            {"name": "kill-stt", "at_s": 10, "kind": "kill_worker", "service": "stt"},
            {
                "name": "squeeze",
                "at_s": 20,
                "kind": "lower_hpa_max",
                "service": "stt",
                "max_replicas": 3,
                "restore_after_s": 10,
            },
            {"name": "restart-redis", "at_s": 30, "kind": "restart_redis"},
        ]
    )
    f = facts(tmp_path, scen)
    f.faults = records
    for k, v in kw.items():
        setattr(f, k, v)
    return f


def records_ok():
    return [
        FaultRecord("kill-stt", "kill_worker", "stt", 10, T0 + 11.5, "stt-a", "kubernetes: kill -KILL -1 in pod stt-a"),
        FaultRecord(
            "squeeze",
            "lower_hpa_max",
            "stt",
            20,
            T0 + 20.2,
            "hpa/stt",
            "maxReplicas 8 -> 3",
            restored_t=T0 + 30.3,
            restore_detail="maxReplicas -> 8",
        ),
        FaultRecord("restart-redis", "restart_redis", None, 30, T0 + 30.4, "redis", "kubernetes: deleted pod(s) ..."),
    ]


def test_faults_pass_when_injected_on_time_and_restored(tmp_path):
    got = by_name(evaluate(chaos_facts(tmp_path, records_ok())))
    assert got["fault.kill-stt"].passed and got["fault.kill-stt"].value == 11.5
    assert got["fault.squeeze"].passed and "restored at +30.3 s" in got["fault.squeeze"].observed
    assert got["fault.restart-redis"].passed


def test_a_fault_that_failed_came_late_was_not_restored_or_never_ran_fails(tmp_path):
    recs = records_ok()
    recs[0].t = T0 + 25  # 15 s late
    recs[1].restored_t, recs[1].restore_detail = None, None
    recs[2].error = "FaultError: no pod matches app.kubernetes.io/name=redis"
    got = by_name(evaluate(chaos_facts(tmp_path, recs)))
    assert not got["fault.kill-stt"].passed and got["fault.kill-stt"].value == 25
    assert not got["fault.squeeze"].passed and "NOT restored" in got["fault.squeeze"].observed
    assert not got["fault.restart-redis"].passed and "no pod matches" in got["fault.restart-redis"].observed
    got = by_name(evaluate(chaos_facts(tmp_path, recs[:1])))
    assert got["fault.restart-redis"].observed == "never injected (the run ended first)"


def test_report_lists_each_fault_with_its_time(tmp_path):
    f = chaos_facts(tmp_path, records_ok())
    results = evaluate(f)
    report = build_report(f, results, {"name": "local"}, T0 - 10, [], None, [])
    report["faults"] = [r.to_json(T0) for r in f.faults]
    assert [(x["name"], x["at"], x["late_s"]) for x in report["faults"]] == [
        ("kill-stt", 11.5, 1.5),
        ("squeeze", 20.2, 0.2),
        ("restart-redis", 30.4, 0.4),
    ]
    assert report["faults"][1]["restored_at"] == 30.3
    text = summary(report)
    assert "fault kill-stt (kill_worker) at +11.5 s: kubernetes: kill -KILL -1 in pod stt-a" in text
    assert "fault squeeze (lower_hpa_max) at +20.2 s: maxReplicas 8 -> 3; restored at +30.3 s" in text


def test_the_gateway_count_survives_a_gateway_restart(tmp_path):
    # Raw samples of gateway_jobs_submitted_total{service=stt}: 0 .. 6, restart (reset) between +11 and +13, 0 .. 3.
    points = [(T0 - 2, 0.0), (T0 + 3, 2.0), (T0 + 7, 4.0), (T0 + 11, 6.0), (T0 + 13, 1.0), (T0 + 19, 3.0)]
    total, gaps = counter_increase(points)
    assert total == 9 and gaps == [{"after": T0 + 11, "before": T0 + 13}]
    f = chaos_facts(tmp_path, records_ok())
    # The ledger accepted stt jobs at +1, +3, ..., +19 (10); one (+11) in the unscraped gap, one (+13) on its edge.
    f.gateway_submitted = {"stt": 8.0, "tts": 10.0}
    f.gateway_resets = [{"service": "stt", **gaps[0]}]
    got = by_name(evaluate(f))["jobs.gateway_count"]
    assert got.passed, got
    assert "less at most the 2 accepted between a restart" in got.expected
    f.gateway_submitted = {"stt": 7.0, "tts": 10.0}
    assert not by_name(evaluate(f))["jobs.gateway_count"].passed


def replica(pod, svc, points):
    return {"metric": {"__name__": "gateway_jobs_submitted_total", "service": svc, "pod": pod}, "values": points}


def two_replicas_replaced():
    """The cluster path's gateway: replicas a and b (scraped 1 s apart), both deleted at +40, replaced by c and d.
    a and b accept stt jobs one each per 2 s from +0 and count them in-process; c and d start again from 0."""
    a = [(T0 - 20 + t, 5.0) for t in (0, 4, 8, 12, 16)] + [(T0 + t, 5.0 + t // 2) for t in range(0, 40, 4)]
    b = [(T0 - 19 + t, 3.0) for t in (0, 4, 8, 12, 16)] + [(T0 + t + 1, 3.0 + (t + 1) // 2) for t in range(0, 40, 4)]
    # a counted 5 -> 23 (18 during the run), b 3 -> 21 (18); c and d, first scraped at +48 and +49, from 0.
    c = [(T0 + 48 + t, 2.0 + t // 2) for t in range(0, 12, 4)]  # 2 .. 6
    d = [(T0 + 49 + t, 1.0 + t // 2) for t in range(0, 12, 4)]  # 1 .. 5
    return [replica("a", "stt", a), replica("b", "stt", b), replica("c", "stt", c), replica("d", "stt", d)]


def test_the_gateway_count_is_summed_per_replica_across_replacement():
    # Merged into one line, the replicas' interleaved values read as a reset at every other sample (the count
    # "rose by 1936" for 247 accepted on the real node): each series counts on its own.
    counts, gaps = series_increase(two_replicas_replaced(), since=T0, until=T0 + 60)
    assert counts == {"stt": 18.0 + 18.0 + 6.0 + 5.0}
    # Where a replica's last count may be lost: from its last scrape to the first scrape of a replacement.
    assert gaps == [
        {"service": "stt", "after": T0 + 36, "before": T0 + 48},
        {"service": "stt", "after": T0 + 37, "before": T0 + 48},
    ]


def test_the_gateway_count_within_one_series_still_survives_a_restart():
    pts = [(T0 - 4, 3.0), (T0 + 2, 5.0), (T0 + 6, 1.0), (T0 + 10, 4.0)]
    counts, gaps = series_increase([replica("a", "stt", pts)], since=T0, until=T0 + 11)
    assert counts == {"stt": 2.0 + 1.0 + 3.0}
    assert gaps == [{"service": "stt", "after": T0 + 2, "before": T0 + 6}]


def test_the_run_reads_the_gateway_count_per_replica(monkeypatch):
    from loadtests import run as run_mod

    class Prom:
        def matrix(self, expr, at):
            assert expr == f"gateway_jobs_submitted_total[{int(60 + run_mod.GATEWAY_LOOKBACK_S)}s]"
            return two_replicas_replaced()

    class FakeRun:
        def __init__(self):
            self.anchors, self.started = {"run_start": T0}, T0

    counts, resets = run_mod._gateway_across_restarts(Prom(), FakeRun(), T0 + 60, "fallback")
    assert counts == {"stt": 47.0} and len(resets) == 2


def test_exactly_once_is_judged_from_bullmqs_record(tmp_path):
    f = chaos_facts(tmp_path, records_ok())
    ids = {o.job_id: o.service for o in f.accounting.outcomes.values()}
    events = {"stt": [], "tts": []}
    n = 0
    for job_id, svc in ids.items():
        for ev in ("added", "waiting", "active", "completed"):
            n += 1
            events[svc].append((f"{int(T0 * 1000) + n}-0", {"event": ev, "jobId": job_id}))
    hashes = {j: {"ats": 1, "atm": 1, "stc": 0, "finishedOn": int(T0 * 1000)} for j in ids}
    stalled = sorted(ids)[0]
    hashes[stalled] = {"ats": 2, "atm": 1, "stc": 1, "finishedOn": int(T0 * 1000)}
    raw = {
        "since_ms": int(T0 * 1000) - 10_000,
        "first_kept_ms": {"stt": int(T0 * 1000), "tts": None},
        "max_deleted_ms": {"stt": 0, "tts": None},
        "events": events,
        "hashes": hashes,
    }
    f.queue_audit = queueaudit.audit(raw, ids)
    got = by_name(evaluate(f))["jobs.exactly_once"]
    assert got.passed, got
    assert "runs per job {'1': 19, '2': 1} (1 retries, 1 stalls)" in got.observed
    twice = sorted(ids)[1]
    events[ids[twice]].append(("9-0", {"event": "completed", "jobId": twice}))
    f.queue_audit = queueaudit.audit(raw, ids)
    got = by_name(evaluate(f))["jobs.exactly_once"]
    assert not got.passed and f"1 finished more than once (e.g. {twice}: 2 finishes)" in got.observed
    raw["max_deleted_ms"]["tts"] = raw["since_ms"] + 5  # trimmed past the run start
    f.queue_audit = queueaudit.audit(raw, ids)
    assert "trimmed past the run start" in by_name(evaluate(f))["jobs.exactly_once"].observed
    f.queue_audit = "Redis not readable: ConnectionError"
    assert not by_name(evaluate(f))["jobs.exactly_once"].passed


# ------------------------------------------------------------------ BullMQ's record from a real redis-server


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    port = free_port()
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path_factory.mktemp("redis")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_bullmq_record_of_real_jobs_counts_runs_and_completions(redis_url):
    """Three jobs through real BullMQ: one fails its first run and is retried; the audit reads what BullMQ's
    scripts wrote (job hashes, the event stream) and the live depth the reaction probe polls."""
    from bullmq import Queue, Worker

    prefix = "t" + uuid.uuid4().hex[:8]
    ids = {f"stt-{uuid.uuid4().hex}": "stt" for _ in range(3)}
    flaky = sorted(ids)[0]
    since = int(time.time() * 1000) - 1

    async def go():
        queue = Queue("stt", {"connection": redis_url, "prefix": prefix})
        for job_id in sorted(ids):
            await queue.add("stt", {"i": job_id}, {"jobId": job_id, "attempts": 3, "backoff": 0})
        depth = queueaudit.RedisQueues(redis_url, prefix).depth(["stt", "tts"])
        seen: dict[str, int] = {}
        done = asyncio.Event()

        async def process(job, token):
            seen[job.id] = seen.get(job.id, 0) + 1
            if job.id == flaky and seen[job.id] == 1:
                raise RuntimeError("first run fails")
            if sum(1 for j in ids if seen.get(j, 0) >= (2 if j == flaky else 1)) == len(ids):
                asyncio.get_running_loop().call_later(0.3, done.set)
            return {"text": "ok"}

        worker = Worker("stt", process, {"connection": redis_url, "prefix": prefix})
        await asyncio.wait_for(done.wait(), 20)
        await worker.close()
        await queue.close()
        return depth

    depth = asyncio.run(go())
    assert depth == {"stt": 3.0, "tts": 0.0}
    client = redis.Redis.from_url(redis_url)
    raw = queueaudit.read(client, prefix, {"stt": "stt"}, ids, since, chunk=4)
    a = queueaudit.audit(raw, ids)
    assert a["completed_once"] == 3 and a["not_completed"] == [] and a["finished_more_than_once"] == []
    assert a["per_job"][flaky]["runs"] == 2 and a["per_job"][flaky]["attempts_made"] == 2
    assert a["jobs_by_runs"] == {"1": 2, "2": 1} and a["retries"] == 1 and a["stalls"] == 0
    assert a["unledgered_added"] == [] and a["events_trimmed"] == []
    # A job the ledger does not know (accepted by the gateway while its answer was lost) is reported.
    dropped = sorted(ids)[0]
    fewer = {k: v for k, v in ids.items() if k != dropped}
    assert queueaudit.audit(queueaudit.read(client, prefix, {"stt": "stt"}, fewer, since), fewer)[
        "unledgered_added"
    ] == [dropped]
    assert queueaudit.RedisQueues(redis_url, prefix).persistence() is not None  # --save "" --appendonly no
    client.close()


def test_a_waiting_worker_kill_does_not_delay_the_next_fault():
    """chaos on the local target, 01:25 UTC: a kill waiting 10 s for a job in hand pushed the pod deletion
    planned 7 s later 4 s past its time; each injection now runs on its own thread."""
    cluster = FakeCluster({"stt": [pod("stt-a"), pod("stt-b")], "tts": [pod("tts-a")]})
    inj = Injector(cluster, FakeRuntime(), {"stt": "stt", "tts": "tts"}, FakeQueues([0]), mid_job_wait_s=0.6)
    fs = (Fault("kill", 0.0, "kill_worker", "stt"), Fault("delete", 0.1, "delete_pod", "tts"))
    records: list[FaultRecord] = []
    start = time.time()
    run_schedule(fs, inj, lambda: start, threading.Event(), records)
    by = {r.name: r for r in records}
    assert by["delete"].t - start < 0.35
    assert by["kill"].t - start >= 0.6 and "not every worker held a job" in by["kill"].detail
    assert [r.name for r in records] == ["delete", "kill"]  # in the order they happened


def test_only_ready_workers_are_killed_and_counted():
    """A pod whose worker is still loading its model holds no job: it is neither a victim nor counted."""
    cluster = FakeCluster({"stt": [pod("stt-a"), pod("stt-b"), pod("stt-new")]})
    runtime = FakeRuntime()
    inj = Injector(
        cluster,
        runtime,
        {"stt": "stt"},
        FakeQueues([2]),
        worker_ready=lambda p: p["metadata"]["name"] != "stt-new",
    )
    rec = inj.inject(Fault("kill", 0, "kill_worker", "stt"))
    assert "2 active job(s) for 2 ready worker(s)" in rec.detail and rec.target in ("stt-a", "stt-b")
    inj = Injector(cluster, runtime, {"stt": "stt"}, FakeQueues([2]), mid_job_wait_s=0.3, worker_ready=lambda p: False)
    assert "with a ready worker" in inj.inject(Fault("kill", 0, "kill_worker", "stt")).error
