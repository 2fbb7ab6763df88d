"""End to end against the running local stack (the test command brings it up before pytest): the short
``smoke`` scenario passes with every job accounted for, and the ``impossible`` scenario fails naming the
expectation and the replicas it saw. Both go through playbooks/loadtest.yml as a user would, so they reach the
stack the way the inventory says (the API server wherever the services run in the cluster; tests/e2e/stack.py).

Other tests may share the stack: the runner waits (bounded) for both services to be back at their minimum with
empty queues before it starts the load.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e import stack

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def run_scenario(name: str, out: Path, timeout: int) -> tuple[subprocess.CompletedProcess, dict]:
    stack.require_stack()
    proc = stack.run_playbook("loadtest.yml", "-e", f"scenario={name}", "-e", f"loadtest_output_dir={out}",
                              timeout=timeout)
    report_path = out / "report.json"
    assert report_path.is_file(), f"no report.json; stdout:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc, json.loads(report_path.read_text())


def check_accounting(report: dict) -> None:
    jobs = report["jobs"]
    assert jobs["submitted"] > 0
    assert jobs["submitted"] == jobs["completed"] + jobs["failed"] + jobs["invalid"] + jobs["lost"]
    assert jobs["invalid"] == 0, jobs["invalid_jobs"]
    assert len(jobs["failed_jobs"]) == jobs["failed"] and all(j["reason"] for j in jobs["failed_jobs"])
    assert jobs["lost"] == 0, jobs["lost_jobs"]
    ledger = [json.loads(line) for line in (Path(report["plot"]).parent / "jobs.jsonl").read_text().splitlines()]
    accepted = {r["job_id"] for r in ledger if r["kind"] == "submit" and r["ok"]}
    assert len(accepted) == jobs["submitted"]


def test_impossible_scenario_fails_naming_the_expectation_and_value(tmp_path):
    proc, report = run_scenario("impossible", tmp_path / "impossible", timeout=480)
    assert proc.returncode == 2, proc.stdout[-6000:] + proc.stderr  # ansible-playbook: a task failed
    assert report["status"] == "failed"
    assert "scale_up.stt" in report["failed_expectations"]
    failed = next(e for e in report["expectations"] if e["name"] == "scale_up.stt")
    peak = report["scaling"]["stt"]["max_ready_replicas"]
    assert failed["observed"].startswith(f"never reached 9: at most {peak} ready replicas")
    assert failed["value"] == peak and 2 <= peak <= 8
    # The summary the playbook prints, and its failure message, name the failing expectation and what was seen.
    fail_lines = [line for line in proc.stdout.splitlines() if re.search(r"\bFAIL\s+scale_up\.stt\b", line)]
    assert any("never reached 9" in line for line in fail_lines), proc.stdout[-6000:]
    assert "Load test impossible FAILED" in proc.stdout, proc.stdout[-6000:]
    check_accounting(report)


def test_smoke_scenario_passes_end_to_end(tmp_path):
    out = tmp_path / "smoke"
    proc, report = run_scenario("smoke", out, timeout=540)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr
    assert report["status"] == "passed" and report["failed_expectations"] == []
    assert {e["name"] for e in report["expectations"]} >= {"scale_up.stt", "back_to_min.stt", "jobs.lost"}
    check_accounting(report)
    assert report["jobs"]["completed"] == report["jobs"]["submitted"]
    scaling = report["scaling"]["stt"]
    assert scaling["max_ready_replicas"] >= 3 and scaling["back_to_min_after_load_s"] is not None
    # The timeline covers the run, from before the load to the return to the minimum, with a sample every
    # ~2 s (loadtests/run.py's --sample-interval default, which loadtest.yml keeps) holding HPA, replica,
    # queue and cost readings. How many samples that is depends on how fast the run settles (37 in 72 s at
    # CI on 2026-12-03), so the check is the cadence and the span, not a count.
    samples = report["samples"]
    interval = 2.0
    times = [s["t"] for s in samples]
    load = report["load"]
    assert times[0] <= load["start"] and times[-1] >= load["end"] + scaling["back_to_min_after_load_s"], (
        times[0], times[-1], load)
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    assert gaps[len(gaps) // 2] <= 1.25 * interval and gaps[-1] <= 5 * interval, gaps
    assert len(samples) >= (times[-1] - times[0]) / (1.5 * interval)
    assert any(s["services"]["stt"].get("queue_depth", 0) > 0 for s in samples)
    assert all("hpa_desired" in s["services"]["stt"] for s in samples if not s["errors"])
    png = out / "timeline.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 40_000
    # The playbook says where the report and the timeline are.
    assert f"report: {out / 'report.json'}" in proc.stdout and f"timeline: {png}" in proc.stdout, proc.stdout[-3000:]
