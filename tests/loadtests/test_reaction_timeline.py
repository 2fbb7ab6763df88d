"""The reaction timeline from recorded reads: real API objects captured from the local stack (a worker pod, a
container on the real node, recaptured 2026-12-06; the external metrics API's answer, a Prometheus range query,
the HPA and its SuccessfulRescale events, in
tests/loadtests/data/reaction/), with their times moved onto one scripted scale-up. The probe parses them as it
does live; ``extract`` must time every hop from its own source."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest

from loadtests import timeline
from loadtests.plot import draw
from loadtests.report import summary
from loadtests.timeline import ReactionProbe, extract, pod_record, prometheus_points

DATA = Path(__file__).with_name("data") / "reaction"
T0 = 1_800_000_000.0  # load start (whole second: Kubernetes times are truncated to seconds)
LIMIT = timeline.threshold(2, 5, 0.1)  # 11: stt's policy at its minimum of 2


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def load(name: str):
    return json.loads((DATA / name).read_text())


def worker_pod(name: str, created: float, scheduled: float, started: float, ready: float) -> dict:
    """The captured pod, renamed and moved in time (what the API server answers for a new replica)."""
    pod = copy.deepcopy(load("pod.json"))
    pod["metadata"]["name"] = name
    pod["metadata"]["creationTimestamp"] = iso(created)
    for c in pod["status"]["conditions"]:
        c["lastTransitionTime"] = iso(scheduled if c["type"] == "PodScheduled" else ready)
    pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] = iso(started)
    return pod


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def probe_run(readyz_answers: bool = True) -> dict:
    """A scripted scale-up read by the real probe every 0.5 s from T0 - 2 to T0 + 20:
    Redis depth passes 11 at +3.0 (12), the external metric at +5.0 (stamped +4), the HPA scales at +6,
    a new pod is created at +6, scheduled +6, started +7, its /readyz (through the API server's pod proxy)
    answers 200 from +9.5, its Ready condition (the kubelet's next probe) is stamped +12.
    The API reads (external metric, pods, /readyz) come every second poll, at whole seconds here.
    ``readyz_answers=False``: the pod proxy never answers (a cluster that forbids pods/proxy)."""
    clock = Clock(T0 - 2)
    old = load("pod.json")
    old_created = old["metadata"]["creationTimestamp"]
    metric = load("external-metric.json")

    def depth(queues):
        rel = clock.t - T0
        return {"stt": 0.0 if rel < 0 else min(40.0, 4.0 * rel), "tts": 0.0}

    def external(service):
        rel = clock.t - T0
        item = copy.deepcopy(metric["items"][0])
        # The adapter answers the Prometheus value of one scrape ago: 2 s behind Redis.
        item["value"] = str(int(max(0.0, 4.0 * (rel - 2)))) if service == "stt" else "0"
        item["timestamp"] = iso(clock.t)  # the adapter stamps the answer with its query's time
        return timeline.quantity(item["value"]), item["timestamp"]

    def pods(service):
        rel = clock.t - T0
        listed = [old]
        if service == "stt" and rel >= 6.2:
            listed.append(worker_pod("stt-55cbc99d97-new01", T0 + 6, T0 + 6, T0 + 7, T0 + 12))
        return listed

    asked = []

    def readyz(pod):
        asked.append(pod["metadata"]["name"])
        assert timeline.readyz_port(pod) == 9100  # the worker's port named metrics (roles/model_services)
        if not readyz_answers:
            raise RuntimeError("HTTP 403 Forbidden")
        return clock.t - T0 >= 9.5

    probe = ReactionProbe({"stt": "stt", "tts": "tts"}, depth, external, pods, readyz, 0.5, clock)
    i = 0
    while clock.t <= T0 + 20:
        probe.poll(with_api=i % 2 == 0)
        clock.t += 0.5
        i += 1
    assert old_created < iso(T0)  # the captured pod predates the run and must not count as new
    assert set(asked) == {"stt-55cbc99d97-new01"}  # only pods created in the run are asked
    return probe.record()


def sampler_rows() -> list[dict]:
    """The sampler's HPA rows: desired 2 until the controller's sync at +6.4, then 4 (status as captured)."""
    hpa = load("hpa.json")
    rows = []
    for k in range(-2, 20):
        t = T0 + k + 0.4
        desired = 4 if k >= 6 else 2
        rows.append(
            {
                "t": t,
                "services": {
                    "stt": {
                        "hpa_desired": desired,
                        "hpa_min": hpa["spec"]["minReplicas"],
                        "hpa_last_scale_time": iso(T0 + 6) if k >= 6 else hpa["status"].get("lastScaleTime"),
                    }
                },
            }
        )
    return rows


def prometheus() -> list[tuple[float, float]]:
    """A range query answer as captured, its samples moved to 2 s scrapes around the run (depth at scrape)."""
    body = load("prometheus-matrix.json")
    series = body["data"]["result"][0]
    series["values"] = [[T0 + k + 0.01, str(max(0.0, min(40.0, 4.0 * (k + 0.01))))] for k in range(-4, 20, 2)]
    # A second label set for the same queue (a second exporter), lower: the largest per timestamp counts.
    other = copy.deepcopy(series)
    other["metric"]["instance"] = "127.0.0.1:19102"
    other["values"] = [[ts, "1"] for ts, _ in series["values"]]
    return prometheus_points([series, other])


def events() -> list[dict]:
    items = load("hpa-events.json")
    ev = copy.deepcopy(items[0])
    ev["firstTimestamp"] = iso(T0 - 3600)  # aggregated with an earlier run's identical event
    ev["lastTimestamp"] = iso(T0 + 6)
    return [items[-1], ev]


JOBS = [
    {"worker": "stt-55cbc99d97-5xmll", "finished_at": T0 + 4.0, "state": "completed"},
    {"worker": "stt-55cbc99d97-new01", "finished_at": T0 + 13.25, "state": "completed"},
    {"worker": "stt-55cbc99d97-new01", "finished_at": T0 + 15.5, "state": "completed"},
]


def test_pod_record_parses_a_real_pod():
    pod = load("pod.json")
    rec = pod_record(pod)
    assert rec["created"] == timeline.parse_time(pod["metadata"]["creationTimestamp"])
    assert rec["scheduled"] is not None and rec["started"] is not None and rec["ready"] is not None
    assert rec["readyz_port"] == 9100
    assert timeline.parse_time("2026-12-02T01:13:05Z") == pytest.approx(1796173985.0)
    assert timeline.parse_time("2026-12-02T01:13:05.250000Z") == pytest.approx(1796173985.25)


def test_every_hop_is_timed_from_its_own_source():
    record = probe_run()
    tl = extract("stt", LIMIT, 2, T0, record, sampler_rows(), prometheus(), JOBS, events(), scrape_interval_s=2.0)
    got = {h["hop"]: h for h in tl["hops"]}
    assert [h["hop"] for h in tl["hops"]] == list(timeline.HOPS)
    assert tl["missing"] == []
    assert tl["new_pod"] == "stt-55cbc99d97-new01"
    # Redis: 4/s from T0, first poll above 11 is +3.0 (12).
    assert got["queue_over_threshold"]["since_load_start_s"] == 3.0
    assert "depth 12 > 11" in got["queue_over_threshold"]["detail"]
    # Prometheus: scrapes at +0.01, +2.01, +4.01 (16.04 > 11).
    assert got["prometheus_series"]["since_load_start_s"] == pytest.approx(4.01)
    assert got["prometheus_series"]["source"].startswith("Prometheus")
    # External metric: first value above 11 is polled at +5.0 (value 12, two seconds behind Redis).
    assert got["external_metric"]["since_load_start_s"] == 5.0
    assert "value 12 (read at +5.0 s)" in got["external_metric"]["detail"]
    # HPA: lastScaleTime +6, with the aggregated event's message.
    assert got["hpa_desired"]["since_load_start_s"] == 6.0
    assert "New size: 4" in got["hpa_desired"]["detail"] and "desired 4 > min 2" in got["hpa_desired"]["detail"]
    assert got["pod_scheduled"]["since_load_start_s"] == 6.0
    assert got["container_started"]["since_load_start_s"] == 7.0
    # The pod is first listed at +7.0; its /readyz polled at +7, +8, +9 (503) and +10 (200).
    assert got["worker_ready"]["source"] == "worker /readyz"
    assert got["worker_ready"]["since_load_start_s"] == 10.0
    assert got["first_job_finished"]["since_load_start_s"] == 13.25
    assert tl["total_s"] == pytest.approx(10.25)
    assert got["first_job_finished"]["since_previous_s"] == pytest.approx(3.25)
    assert record["errors"] == {}


def test_where_the_pod_proxy_never_answers_the_pod_ready_condition_is_used():
    record = probe_run(readyz_answers=False)
    assert record["errors"]["readyz"] > 0 and "403" in record["last_error"]["readyz"]
    tl = extract("stt", LIMIT, 2, T0, record, sampler_rows(), prometheus(), JOBS, events(), scrape_interval_s=2.0)
    ready = next(h for h in tl["hops"] if h["hop"] == "worker_ready")
    assert ready["source"] == timeline.READYZ_FALLBACK_SOURCE
    assert ready["since_load_start_s"] == 12.0


def test_readyz_port_is_the_workers_named_port():
    pod = load("pod.json")
    assert timeline.readyz_port(pod) == 9100
    bare = copy.deepcopy(pod)
    bare["spec"]["containers"][0]["ports"] = [{"containerPort": 8080}, {"name": "metrics", "containerPort": 9100}]
    assert timeline.readyz_port(bare) == 9100
    bare["spec"]["containers"][0]["ports"] = [{"containerPort": 8080}]
    assert timeline.readyz_port(bare) == 8080
    bare["spec"]["containers"][0].pop("ports")
    assert timeline.readyz_port(bare) is None
    assert pod_record(bare)["readyz_port"] is None


def test_no_scale_up_leaves_the_later_hops_missing_with_the_reason():
    record = probe_run()
    flat = [{"t": r["t"], "services": {"stt": {**r["services"]["stt"], "hpa_desired": 2}}} for r in sampler_rows()]
    tl = extract("stt", LIMIT, 2, T0, record, flat, "Prometheus down", JOBS, [], scrape_interval_s=2.0)
    got = {h["hop"]: h for h in tl["hops"]}
    assert got["queue_over_threshold"]["t"] is not None
    assert got["prometheus_series"]["t"] is None and "Prometheus down" in got["prometheus_series"]["detail"]
    assert got["hpa_desired"]["t"] is None
    assert got["pod_scheduled"]["detail"] == "no scale-up"
    assert tl["total_s"] is None
    assert set(tl["missing"]) == {"prometheus_series", "hpa_desired", *timeline.HOPS[4:]}


def test_tts_without_backlog_has_no_timeline():
    record = probe_run()
    tl = extract("tts", LIMIT, 2, T0, record, [], [], [], [])
    assert tl["hops"][0]["t"] is None and "never above 11" in tl["hops"][0]["detail"]


def test_report_summary_and_plot_show_the_reaction(tmp_path):
    record = probe_run()
    tl = extract("stt", LIMIT, 2, T0, record, sampler_rows(), prometheus(), JOBS, events(), scrape_interval_s=2.0)
    lines = "\n".join(timeline.summary_lines({"stt": tl, "tts": {"error": "ValueError: no policy"}}))
    assert "stt reaction (s from load start): queue_over_threshold 3.0 > prometheus_series 4.0 (+1.0)" in lines
    assert "first_job_finished 13.2 (+3.2); queue -> first job on the new pod 10.2 s" in lines
    assert "tts reaction: not extracted (ValueError: no policy)" in lines
    idle = extract("tts", LIMIT, 2, T0, record, [], [], [], [])
    assert timeline.summary_lines({"tts": idle}) == ["  tts reaction: no scale-up to time (depth never above 11)"]
    report = {
        "scenario": {"name": "unit"},
        "status": "passed",
        "load": {"start": T0, "end": T0 + 10, "stages_run": []},
        "samples": [{"t": T0 + k, "services": {"stt": {"queue_depth": 1, "ready": 2}}} for k in range(20)],
        "scaling": {"stt": {"hpa_min": 2, "hpa_max": 8}},
        "reaction": {"services": {"stt": tl}},
        "faults": [{"name": "kill-stt-worker", "t": T0 + 5, "error": None}],
    }
    out = draw(report, tmp_path / "timeline.png")
    assert out.stat().st_size > 10_000
    full = {
        "scenario": {"name": "unit"},
        "status": "passed",
        "duration_s": 60,
        "started_at": "x",
        "expectations": [],
        "jobs": {
            "submitted": 0,
            "completed": 0,
            "failed": 0,
            "lost": 0,
            "submit_requests": 0,
            "submit_errors": {},
            "cut_off": [],
        },
        "latency": {
            "gateway_submit_ms": {"all": {"p50": 1, "p95": 2}},
            "job_completion_s": {"all": {"p50": 1, "p95": 2}},
        },
        "scaling": {},
        "reaction": {"services": {"stt": tl}},
    }
    assert "reaction timeline (first scale-up" in summary(full)
