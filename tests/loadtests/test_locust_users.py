"""The Locust users against a real gateway process and a real Redis: each posts what its service takes, and the
ledger records every submission with the job id the gateway gave. Locust runs headless, as loadtests.run runs it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
SCENARIO = """\
name: mt-users
description: mt users only, for the test.
load:
  stages:
    - {name: burst, duration_s: 4, users: 2, spawn_rate: 2}
  wait_s: [0.1, 0.2]
  mix: {mt: 1}
timeouts: {baseline_s: 10, drain_s: 10, settle_s: 10}
expect:
  jobs: {max_lost: 0, max_failed: 0, max_submit_errors: 0}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 - 127.0.0.1 only
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 in {timeout} s")


@pytest.fixture
def gateway(tmp_path: Path):
    rport, gport = free_port(), free_port()
    redis = subprocess.Popen([REDIS_SERVER, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    prefix = "lu" + uuid.uuid4().hex[:8]
    env = {**os.environ, "PYTHONPATH": str(REPO), "REDIS_URL": f"redis://127.0.0.1:{rport}/0", "QUEUE_PREFIX": prefix,
           "QUEUES": "stt,tts,mt,dubbing", "MT_TARGET_LANGUAGES": "fr,de", "GATEWAY_PORT": str(gport),
           "GATEWAY_STATE_DIR": str(tmp_path / "gw")}
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115 - closed below
    gw = subprocess.Popen([sys.executable, "-m", "workers.gateway"], env=env, cwd=REPO, stdout=log,
                          stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{gport}/readyz", 60)
        yield f"http://127.0.0.1:{gport}", tmp_path / "gw" / "first-api-key", env
    finally:
        gw.kill()
        redis.kill()
        gw.wait(10)
        redis.wait(10)
        log.close()


@pytest.mark.slow
def test_mt_users_submit_translation_jobs_the_gateway_accepts(gateway, tmp_path: Path) -> None:
    url, key_file, env = gateway
    scenario = tmp_path / "mt-users.yml"
    scenario.write_text(SCENARIO)
    ledger = tmp_path / "jobs.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(REPO / "loadtests/locustfile.py"), "--headless", "--host", url,
         "--only-summary", "--loglevel", "WARNING"],
        env={**env, "LOADTEST_SCENARIO": str(scenario), "LOADTEST_SERVICES": "mt", "LOADTEST_LEDGER": str(ledger),
             "LOADTEST_API_KEY_FILE": str(key_file), "LOADTEST_MT_TARGET_LANGUAGE": "fr"},
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in ledger.read_text().splitlines()]
    submits = [e for e in records if e["kind"] == "submit"]
    assert submits, r.stderr[-3000:]
    assert all(e["ok"] and e["service"] == "mt" and e["job_id"].startswith("mt-") for e in submits), submits[:3]

    from bullmq import Job, Queue

    async def jobs():
        q = Queue("mt", {"connection": env["REDIS_URL"], "prefix": env["QUEUE_PREFIX"]})
        try:
            return [await Job.fromId(q, e["job_id"]) for e in submits]
        finally:
            await q.close()

    queued = asyncio.run(jobs())
    assert all(j is not None and j.data["target_language"] == "fr" for j in queued)
    assert all(2 <= len(j.data["segments"]) <= 4 for j in queued)
    assert len({e["job_id"] for e in submits}) == len(submits)
    assert [e["kind"] for e in records if e["kind"] in ("load_start", "load_stop")] == ["load_start", "load_stop"]


DUBBING = SCENARIO.replace("mt-users", "dubbing-users").replace("mix: {mt: 1}", "mix: {dubbing: 1}")


@pytest.mark.slow
def test_dubbing_users_add_a_flow_per_job_with_its_stt_child(gateway, tmp_path: Path) -> None:
    """The dubbing users upload the scenario's speech clips; each job is a BullMQ flow: the dubbing job waiting for
    its STT child, which waits in the stt queue (no worker runs here)."""
    url, key_file, env = gateway
    scenario = tmp_path / "dubbing-users.yml"
    scenario.write_text(DUBBING)
    ledger = tmp_path / "jobs.jsonl"
    # The clips made before the load (Piper, seconds on a cold cache), not by the users within its 4 s.
    from loadtests.audio import ensure_clips
    from loadtests.scenario import DEFAULT_PHRASES

    ensure_clips(DEFAULT_PHRASES, tmp_path / "clips")
    r = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(REPO / "loadtests/locustfile.py"), "--headless", "--host", url,
         "--only-summary", "--loglevel", "WARNING"],
        env={**env, "LOADTEST_SCENARIO": str(scenario), "LOADTEST_SERVICES": "stt,tts,mt,dubbing",
             "LOADTEST_LEDGER": str(ledger), "LOADTEST_API_KEY_FILE": str(key_file),
             "LOADTEST_MT_TARGET_LANGUAGE": "de", "LOADTEST_AUDIO_DIR": str(tmp_path / "clips")},
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    submits = [e for e in map(json.loads, ledger.read_text().splitlines()) if e["kind"] == "submit"]
    assert submits and all(e["ok"] and e["service"] == "dubbing" and e["job_id"].startswith("dubbing-")
                           for e in submits), submits[:3]

    from bullmq import Job, Queue

    from workers.dubbing.flow import child_id

    async def jobs():
        opts = {"connection": env["REDIS_URL"], "prefix": env["QUEUE_PREFIX"]}
        dub, stt = Queue("dubbing", opts), Queue("stt", opts)
        try:
            return [(await dub.getJobState(e["job_id"]), await Job.fromId(dub, e["job_id"]),
                     await stt.getJobState(child_id(e["job_id"], "stt"))) for e in submits]
        finally:
            await dub.close()
            await stt.close()

    for parent_state, parent, child_state in asyncio.run(jobs()):
        assert (parent_state, child_state) == ("waiting-children", "waiting"), (parent_state, child_state)
        assert parent.data["target_language"] == "de"
