"""End to end against the running local stack (the test command brings it up before pytest): the short
``smoke`` scenario passes with every job accounted for, and the ``impossible`` scenario fails naming the
expectation and the replicas it saw. Both go through ``python -m loadtests.run`` as a user would.

Skipped when the local gateway does not answer. Other tests may share the stack: the runner waits (bounded)
for both services to be back at their minimum with empty queues before it starts the load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("HARNESS_STATE_DIR") or Path.home() / ".local/state/gpu-serving-harness/local")
GATEWAY = "http://127.0.0.1:18080"


@pytest.fixture(scope="module", autouse=True)
def live_stack():
    try:
        httpx.get(f"{GATEWAY}/readyz", timeout=3).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.skip(f"the local stack does not answer at {GATEWAY}: {exc}")
    if not (STATE / "kubeconfig").is_file():
        pytest.skip(f"no kubeconfig under {STATE}")


def run_scenario(name: str, out: Path, timeout: int) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "loadtests.run", "--scenario", name, "--output-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    report_path = out / "report.json"
    assert report_path.is_file(), f"no report.json; stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
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
    proc, report = run_scenario("impossible", tmp_path / "impossible", timeout=420)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert report["status"] == "failed"
    assert "scale_up.stt" in report["failed_expectations"]
    failed = next(e for e in report["expectations"] if e["name"] == "scale_up.stt")
    peak = report["scaling"]["stt"]["max_ready_replicas"]
    assert failed["observed"].startswith(f"never reached 9: at most {peak} ready replicas")
    assert failed["value"] == peak and 2 <= peak <= 8
    # The summary printed to the terminal names the failing expectation and what was seen.
    fail_lines = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert any("scale_up.stt" in line and "never reached 9" in line for line in fail_lines), proc.stdout
    check_accounting(report)


def test_smoke_scenario_passes_end_to_end(tmp_path):
    out = tmp_path / "smoke"
    proc, report = run_scenario("smoke", out, timeout=480)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["status"] == "passed" and report["failed_expectations"] == []
    assert {e["name"] for e in report["expectations"]} >= {"scale_up.stt", "back_to_min.stt", "jobs.lost"}
    check_accounting(report)
    assert report["jobs"]["completed"] == report["jobs"]["submitted"]
    scaling = report["scaling"]["stt"]
    assert scaling["max_ready_replicas"] >= 3 and scaling["back_to_min_after_load_s"] is not None
    # The timeline covers the run: samples every ~2 s with HPA, replica, queue and cost readings.
    samples = report["samples"]
    assert len(samples) >= 40
    assert any(s["services"]["stt"].get("queue_depth", 0) > 0 for s in samples)
    assert all("hpa_desired" in s["services"]["stt"] for s in samples if not s["errors"])
    png = out / "timeline.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 40_000
    assert f"report: {out / 'report.json'}" in proc.stdout and f"timeline: {png}" in proc.stdout
