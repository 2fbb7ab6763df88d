"""A pipeline run (dubbing: stt -> mt -> tts) stage by stage: each stage's latency, queue and replicas, which stage
was the bottleneck when, the end-to-end latency per job, and the cost per dubbed media minute per stage.

The bottleneck at a sample is the stage whose backlog per ready replica is the largest share of its HPA target
(queue_depth_per_pod, the inventory's policy): the stage whose HPA is furthest behind. A stage with no backlog is
not a bottleneck; a sample where no stage has one is "idle". The cost of a stage is its cost rate as the cost
exporter published it (cost_per_hour in the samples: replicas x GPU price) integrated over the run from the load
start to the end of the drain, minimum replicas included: what dubbing that many minutes cost on this target.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from loadtests.expectations import RunFacts, latency_summary
from loadtests.scenario import PIPELINES


def _pressure(row: dict[str, Any], per_pod: float | None) -> float | None:
    depth, ready = row.get("queue_depth"), row.get("ready")
    if depth is None:
        return None
    return float(depth) / (max(int(ready or 0), 1) * (per_pod or 1.0))


def bottlenecks(samples: list[tuple[float, dict[str, dict[str, Any]]]], stages: tuple[str, ...],
                per_pod: dict[str, float | None]) -> list[dict[str, Any]]:
    """Intervals [{from_s, to_s, stage, peak}] of consecutive samples with the same bottleneck (or "idle");
    ``samples``: (seconds from the load start, service -> sample row)."""
    out: list[dict[str, Any]] = []
    for t, rows in samples:
        pressures = {s: p for s in stages if (p := _pressure(rows.get(s) or {}, per_pod.get(s))) is not None}
        top = max(pressures, key=lambda s: pressures[s], default=None)
        stage = top if top is not None and pressures[top] > 0 else "idle"
        peak = round(pressures.get(top, 0.0), 2) if stage != "idle" else 0.0
        if out and out[-1]["stage"] == stage:
            out[-1]["to_s"] = round(t, 1)
            out[-1]["peak"] = max(out[-1]["peak"], peak)
        else:
            out.append({"from_s": round(t, 1), "to_s": round(t, 1), "stage": stage, "peak": peak})
    return out


def _cost_usd(points: list[tuple[float, float]]) -> float | None:
    """Trapezoid integral of a cost rate (USD/hour) over (epoch s, rate) points, in USD."""
    if len(points) < 2:
        return None
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in pairwise(points)) / 3600


def summary(f: RunFacts) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pipeline in f.scenario.pipelines:
        try:
            out[pipeline] = _one(f, pipeline)
        except Exception as exc:  # bad samples: the report says so and is written all the same
            out[pipeline] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _one(f: RunFacts, pipeline: str) -> dict[str, Any]:
    stages = PIPELINES[pipeline]
    outcomes = [] if f.accounting is None else [o for o in f.accounting.outcomes.values() if o.service == pipeline]
    done = [o for o in outcomes if o.state == "completed"]
    start = f.anchors.get("load_start")
    end = (f.accounting.finished_at if f.accounting is not None and f.accounting.finished_at else None) or f.run_end
    rows = [(s["t"], s.get("services") or {}) for s in f.samples if start is not None and start <= s["t"] <= end]
    per_pod = {s: (f.policies[s][0].target_per_pod if s in f.policies else None) for s in stages}
    media_min = sum(o.media_seconds or 0.0 for o in done) / 60
    per_stage: dict[str, Any] = {}
    intervals = bottlenecks([(t - (start or 0), r) for t, r in rows], stages, per_pod)
    for stage in stages:
        seconds = [float(o.stages[stage]["seconds"]) for o in done
                   if o.stages and (o.stages.get(stage) or {}).get("seconds") is not None]
        depth = [r[stage]["queue_depth"] for _, r in rows if (r.get(stage) or {}).get("queue_depth") is not None]
        ready = [r[stage]["ready"] for _, r in rows if (r.get(stage) or {}).get("ready") is not None]
        cost = _cost_usd([(t, float(r[stage]["cost_per_hour"])) for t, r in rows
                          if (r.get(stage) or {}).get("cost_per_hour") is not None])
        per_stage[stage] = {
            "stage_jobs": sum(int((o.stages or {}).get(stage, {}).get("jobs") or 0) for o in outcomes),
            "latency_s": latency_summary(seconds),
            "max_queue_depth": max(depth) if depth else None,
            "max_ready_replicas": max(ready) if ready else None,
            "queue_depth_per_pod": per_pod[stage],
            "bottleneck_s": round(sum(i["to_s"] - i["from_s"] for i in intervals if i["stage"] == stage), 1),
            "cost_usd": None if cost is None else round(cost, 6),
            "cost_per_media_minute_usd": None if cost is None or not media_min else round(cost / media_min, 6),
        }
    return {
        "stages": per_stage,
        "jobs": {"submitted": len(outcomes), "completed": len(done)},
        "end_to_end_s": latency_summary([o.total_s for o in done if o.total_s is not None]),
        "media_minutes": round(media_min, 3),
        "bottleneck": intervals,
    }


def summary_lines(pipelines: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, p in pipelines.items():
        if p.get("error"):
            lines.append(f"{name}: pipeline not summarised ({p['error']})")
            continue
        e = p["end_to_end_s"]
        lines.append(f"{name}: {p['jobs']['completed']} of {p['jobs']['submitted']} jobs completed, "
                     f"{p['media_minutes']} media minutes; end to end p50 {e['p50']} s, p95 {e['p95']} s")
        for stage, s in p["stages"].items():
            lat = s["latency_s"]
            cost = s["cost_per_media_minute_usd"]
            lines.append(f"  {stage}: {s['stage_jobs']} jobs, p50 {lat['p50']} s, p95 {lat['p95']} s; max queue "
                         f"{s['max_queue_depth']}, max ready {s['max_ready_replicas']}; bottleneck "
                         f"{s['bottleneck_s']} s; ${cost if cost is not None else '?'} per media minute")
        spans = [f"{i['stage']} {i['from_s']:g}-{i['to_s']:g} s" for i in p["bottleneck"] if i["stage"] != "idle"]
        lines.append(f"  bottleneck: {', '.join(spans) or 'none (no stage had a backlog)'}")
    return lines
