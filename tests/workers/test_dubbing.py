"""Dubbing as a BullMQ flow over the real workers: a video (or audio) is transcribed (faster-whisper), translated
(a random-weight Marian: meaningless text), spoken (Piper), lip-synced (a random-weight Wav2Lip-style model: noise
in the face box), each stage a job in its own queue, stepped by the orchestrator (python -m workers.dubbing). The
checks: every stage ran as its policy says (one stt, one mt, one tts per segment, one lipsync), the MP4 lasts as
long as the dubbed audio, a failed stage fails the dubbing job with the stage named, and bad uploads are named."""

from __future__ import annotations

import io
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from media_samples import mux
from workers_testlib import Proc, base_env, free_port, http_get, start_worker, wait_for

from workers.core.env import Settings
from workers.dubbing.flow import child_id
from workers.dubbing.mix import mix
from workers.lipsync import media
from workers.queueing.jobs import service_of

FPS = 25


def wav(seconds: float, rate: int = 22050, freq: float = 200.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def test_clips_start_at_their_segments_and_never_overlap() -> None:
    out, seconds, placed = mix([wav(1.0), wav(0.5), wav(0.5)], [0.5, 1.0, 3.0], 2.0)
    assert placed == [0.5, 1.5, 3.0]  # the second starts where the first ended, later than its segment
    assert seconds == pytest.approx(3.5, abs=1e-3)
    audio, rate = sf.read(io.BytesIO(out))
    assert rate == 22050 and len(audio) == round(3.5 * rate)
    assert np.abs(audio[: int(0.5 * rate)]).max() == 0  # silence before the first segment
    _, seconds, _ = mix([wav(0.2)], [0.0], 5.0)
    assert seconds == pytest.approx(5.0)  # never shorter than the source
    with pytest.raises(ValueError, match="different sample rates"):
        mix([wav(0.2, 22050), wav(0.2, 16000)], [0, 1], 0)
    with pytest.raises(ValueError, match="2 clips for 1 segments"):
        mix([wav(0.2), wav(0.2)], [0], 0)


def test_stage_ids_are_the_gateways_form_and_stable() -> None:
    dub = f"dubbing-{uuid.uuid4().hex}"
    a, b = child_id(dub, "tts", 3), child_id(dub, "tts", 3)
    assert a == b and service_of(a) == "tts" and a != child_id(dub, "tts", 4) != child_id(dub, "mt", 3)


def speech_video(piper_voice, text: str, with_audio: bool = True) -> bytes:
    """A talking-head stand-in: a moving gradient at 25 fps as long as the sentence, Piper's speech as AAC."""
    s = piper_voice.synthesize(text, "default")
    speech = s.samples.astype(np.float32).reshape(-1)
    return mux(int(len(speech) / s.sample_rate * FPS), fps=FPS, audio=speech if with_audio else None,
               rate=s.sample_rate)


@pytest.fixture(scope="module")
def pipeline(redis_url: str, tmp_path_factory: pytest.TempPathFactory):
    """Every stage's worker process and the orchestrator on one Redis, with a queue prefix of their own."""
    from workers.lipsync.model import build_random
    from workers.mt.random_model import main as build_marian

    tmp = tmp_path_factory.mktemp("dubbing")
    assert build_marian([str(tmp / "mt")]) == 0
    w2l = build_random(tmp / "w2l", channels=8)
    env = {"REDIS_URL": redis_url, "QUEUE_PREFIX": "dub" + uuid.uuid4().hex[:8],
           "QUEUES": "dubbing,stt,mt,tts,lipsync", "QUEUE_LOCK_DURATION_MS": "10000"}
    procs = []
    try:
        for name, extra in (("stt", {}), ("mt", {"MT_MODEL": str(tmp / "mt"), "MT_MAX_DECODING_LENGTH": "6"}),
                            ("tts", {}), ("lipsync", {"LIPSYNC_MODEL": str(w2l), "LIPSYNC_CPU_THREADS": "1"})):
            procs.append(start_worker(tmp, name, name, {**env, **extra}, ready_timeout=120)[0])
        port = free_port()
        orch = Proc(["-m", "workers.dubbing"], base_env(METRICS_PORT=str(port), **env), tmp / "dubbing.log")
        procs.append(orch)
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 60, "the orchestrator ready")
        yield env, tmp, procs
    finally:
        for p in procs:
            p.stop()


def gateway_client(env: dict, tmp: Path, **extra: str):
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry

    from workers.gateway.app import create_app
    from workers.gateway.config import GatewayConfig

    # Keys in a file of each gateway's own: every test here has a gateway of its own on the one Redis.
    config = GatewayConfig.from_settings(Settings({**env, "GATEWAY_STATE_DIR": str(tmp / f"gw-{uuid.uuid4().hex}"),
                                                   "GATEWAY_KEY_STORE": "file", **extra}))
    return TestClient(create_app(config, CollectorRegistry())), {"X-API-Key": config.api_key_file.read_text().strip()}


def wait_final(client, headers, url: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while (state := client.get(url, headers=headers).json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    return state


def logs(procs) -> str:
    return "\n".join(p.log()[-1500:] for p in procs)


@pytest.mark.slow
def test_a_video_is_dubbed_through_every_stage(pipeline, piper_voice) -> None:
    env, tmp, procs = pipeline
    client, headers = gateway_client(env, tmp, MT_TARGET_LANGUAGES="de")
    with client:
        video = speech_video(piper_voice, "Please call me back tomorrow morning. The train leaves at seven.")
        r = client.post("/v1/jobs/dubbing", headers=headers, data={"target_language": "de"},
                        files={"file": ("talk.mp4", video, "video/mp4")})
        assert r.status_code == 202, r.text
        state = wait_final(client, headers, r.json()["status_url"], 240)
        assert state["status"] == "completed", (state, logs(procs))
        stages = state["stages"]
        assert list(stages) == ["stt", "mt", "tts", "lipsync"]
        result = state["result"]
        assert [stages[s]["jobs"] for s in stages] == [1, 1, result["segments"], 1]
        assert all(v["status"] == "completed" and v["seconds"] is not None for v in stages.values()), stages
        order = [stages[s]["started_at_ms"] for s in stages]
        assert order == sorted(order)  # each stage after the one before
        assert stages["lipsync"]["finished_at_ms"] <= state["timings"]["finished_at_ms"]
        mp4 = client.get(state["video_url"], headers=headers)
        assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
        d = media.durations(mp4.content)
        assert abs(d["video"] - result["dubbed_seconds"]) <= 1 / FPS + 1e-6
        assert abs(d["audio"] - result["dubbed_seconds"]) <= 0.1
        assert result["dubbed_seconds"] >= result["source_seconds"] - 1 / FPS


@pytest.mark.slow
def test_audio_is_dubbed_without_lipsync(pipeline, piper_voice) -> None:
    env, tmp, procs = pipeline
    client, headers = gateway_client(env, tmp, MT_TARGET_LANGUAGES="de")
    with client:
        s = piper_voice.synthesize("Turn left at the next corner.", "default")
        r = client.post("/v1/jobs/dubbing", headers=headers, data={"target_language": "de"},
                        files={"file": ("talk.wav", s.wav_bytes(), "audio/wav")})
        assert r.status_code == 202, r.text
        state = wait_final(client, headers, r.json()["status_url"], 180)
        assert state["status"] == "completed", (state, logs(procs))
        assert list(state["stages"]) == ["stt", "mt", "tts"] and state["video_url"] is None
        audio = client.get(state["audio_url"], headers=headers)
        samples, rate = sf.read(io.BytesIO(audio.content))
        assert abs(len(samples) / rate - state["result"]["dubbed_seconds"]) < 0.01
        # The load test's accounting of this job (loadtests/accounting.py, through this gateway): completed, with
        # its media length and its stage jobs, whose ids it derives; BullMQ's record (loadtests/queueaudit.py, from
        # Redis) has each of them completed exactly once in its own stage's queue.
        from redis import Redis

        from loadtests.accounting import JobOutcome, JobPoller
        from loadtests.queueaudit import audit, read

        client.headers.update(headers)
        outcome = JobOutcome(r.json()["id"], "dubbing", time.time())
        JobPoller(str(client.base_url), headers["X-API-Key"], client=client).poll_one(outcome)
        assert outcome.state == "completed", outcome
        assert outcome.media_seconds == pytest.approx(state["result"]["source_seconds"])
        ids = {outcome.job_id: "dubbing"} | outcome.stage_jobs()
        assert sorted(ids.values()) == sorted(["dubbing", "stt", "mt"] + ["tts"] * state["result"]["segments"])
        with Redis.from_url(env["REDIS_URL"]) as redis:
            raw = read(redis, env["QUEUE_PREFIX"], {q: q for q in ("dubbing", "stt", "mt", "tts")}, ids,
                       int(outcome.submitted_at * 1000) - 60_000)
        record = audit(raw, ids)
        assert record["completed_once"] == len(ids) and not record["not_completed"], record


@pytest.mark.slow
def test_a_failed_stage_fails_the_dubbing_job_naming_it(pipeline, piper_voice) -> None:
    """The gateway takes any language here (no MT_TARGET_LANGUAGES); the model translates to de only."""
    env, tmp, procs = pipeline
    client, headers = gateway_client(env, tmp)
    with client:
        s = piper_voice.synthesize("Thank you for calling.", "default")
        r = client.post("/v1/jobs/dubbing", headers=headers, data={"target_language": "fr"},
                        files={"file": ("talk.wav", s.wav_bytes(), "audio/wav")})
        assert r.status_code == 202, r.text
        state = wait_final(client, headers, r.json()["status_url"], 120)
    assert state["status"] == "failed", (state, logs(procs))
    assert state["error"].startswith("stage mt failed:") and "'fr'" in state["error"], state["error"]
    assert state["stages"]["stt"]["status"] == "completed" and "tts" not in state["stages"]


def test_bad_dubbing_uploads_are_named(pipeline, piper_voice) -> None:
    env, tmp, _ = pipeline
    client, headers = gateway_client(env, tmp, MT_TARGET_LANGUAGES="de", GATEWAY_MAX_VIDEO_BYTES="300000")
    speech = piper_voice.synthesize("Hello there.", "default").wav_bytes()
    cases = [
        ("no audio track", speech_video(piper_voice, "Hello there.", with_audio=False), "de", 422, "no_audio_track"),
        ("unknown target language", speech, "xx", 422, "unknown_language"),
        ("corrupt container", os.urandom(4000), "de", 400, "corrupt_media"),
        ("oversized", os.urandom(400_000), "de", 413, "upload_too_large"),
    ]
    with client:
        for what, data, target, status, code in cases:
            r = client.post("/v1/jobs/dubbing", headers=headers, data={"target_language": target},
                            files={"file": ("in.mp4", data, "application/octet-stream")})
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), (what, r.text)
            if code == "corrupt_media":  # both kinds of upload the endpoint takes are named
                assert "MP4" in r.json()["error"]["message"] and "WAV" in r.json()["error"]["message"], r.text


def test_a_failed_dubbing_job_leaves_no_stage_job_waiting(redis_url: str) -> None:
    """A dubbing job at its tts stage (four tts jobs) whose first tts job fails: BullMQ fails the dubbing job
    (failParentOnFailure), and the sweep removes the three tts jobs no worker took, so no worker runs them for
    nothing; the gateway's view counts them as cancelled."""
    import asyncio

    from bullmq import FlowProducer, Job, Queue, UnrecoverableError, Worker
    from redis.asyncio import Redis

    from workers.core.common import QueuePolicy
    from workers.dubbing.orchestrator import Orchestrator
    from workers.queueing.jobs import job_options

    async def scenario() -> tuple[dict, dict, str, list]:
        prefix = "dsw" + uuid.uuid4().hex[:8]
        policy = QueuePolicy.from_settings(Settings({"REDIS_URL": redis_url, "QUEUE_PREFIX": prefix}))
        queues = {s: s for s in ("dubbing", "stt", "mt", "tts")}
        redis = Redis.from_url(redis_url)
        orch = Orchestrator(policy, queues, redis)
        dub = f"dubbing-{uuid.uuid4().hex}"
        flows = FlowProducer(policy.connection_opts())
        tts_ids = [child_id(dub, "tts", i) for i in range(4)]
        await flows.add({"name": "dubbing", "queueName": "dubbing", "opts": job_options(policy, dub),
                         "data": {"step": "tts", "stages": {"tts": tts_ids}, "target_language": "de"},
                         "children": [{"name": "tts", "queueName": "tts", "data": {"text": str(i)},
                                       "opts": {**job_options(policy, jid), "failParentOnFailure": True}}
                                      for i, jid in enumerate(tts_ids)]})
        seen: list[str] = []
        done = asyncio.Event()

        async def fail_one(job, token):
            seen.append(job.id)
            done.set()
            raise UnrecoverableError("stage tts: the voice model is gone")

        worker = Worker("tts", fail_one, {**policy.connection_opts(), "concurrency": 1, "autorun": False})
        task = asyncio.ensure_future(worker.run())
        await asyncio.wait_for(done.wait(), 30)
        await worker.close()
        task.cancel()
        # BullMQ sends the dubbing job back to wait with a deferred failure; the orchestrator's worker fails it.
        stepper = Worker("dubbing", orch.process, {**policy.connection_opts(), "autorun": False})
        stepping = asyncio.ensure_future(stepper.run())
        tts = Queue("tts", policy.connection_opts())
        deadline = time.monotonic() + 10
        while (state := await (await Job.fromId(orch.dubbing, dub)).getState()) != "failed":
            assert time.monotonic() < deadline, state
            await asyncio.sleep(0.1)
        await stepper.close()
        stepping.cancel()
        before = await tts.getJobCounts("waiting", "failed")
        swept = await orch.sweep_failed()
        again = await orch.sweep_failed()  # nothing new failed: nothing swept twice
        after = await tts.getJobCounts("waiting", "failed")
        parent = await Job.fromId(orch.dubbing, dub)
        for closing in (tts, flows, orch):
            await closing.close()
        await redis.aclose()
        return before, after, dub, [swept, again, seen, parent.data]

    before, after, dub, (swept, again, seen, data) = asyncio.run(scenario())
    assert before == {"waiting": 3, "failed": 1}, before
    assert after == {"waiting": 0, "failed": 1}, after
    assert swept == {dub: sorted(set(child_id(dub, "tts", i) for i in range(4)) - set(seen))} and again == {}
    assert sorted(data["cancelled"]) == swept[dub]
