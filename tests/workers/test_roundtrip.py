"""End to end: text -> gateway -> TTS worker (piper) -> WAV -> gateway -> STT worker (whisper) -> text."""

from __future__ import annotations

import re
import time
import uuid

import jiwer
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from workers_testlib import http_get, start_worker

from workers.core.env import Settings
from workers.gateway.app import create_app
from workers.gateway.config import GatewayConfig
from workers.queueing.jobs import new_job_id

SENTENCES = [
    "The weather is nice today.",
    "Please call me back tomorrow morning.",
    "The train leaves at seven o'clock.",
    "She bought three apples and a loaf of bread.",
    "Turn left at the next corner.",
    "We need more time to finish the project.",
]



def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def wait_done(client: TestClient, ids: list[str], headers: dict[str, str], timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [client.get(f"/v1/jobs/{job_id}", headers=headers).json() for job_id in ids]
        if all(s["status"] in ("completed", "failed") for s in states):
            return states
        time.sleep(0.3)
    raise AssertionError(f"jobs not finished in {timeout} s: {[s['status'] for s in states]}")


def metric(port: int, name: str, **labels: str) -> float:
    text = http_get(f"http://127.0.0.1:{port}/metrics")[1]
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"{name}{labels} not exported")


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory):
    """A TTS and an STT worker process on a queue prefix of their own, shared by the tests here."""
    tmp_path = tmp_path_factory.mktemp("stack")
    env = {"REDIS_URL": redis_url, "QUEUE_PREFIX": "rt" + uuid.uuid4().hex[:8]}
    tts, tts_port = start_worker(tmp_path, "tts", "tts", env)
    try:
        stt, stt_port = start_worker(tmp_path, "stt", "stt", {**env, "STT_BATCH_SIZE": "4"})
    except BaseException:
        tts.stop()
        raise
    yield env, tts_port, stt_port, tmp_path
    tts.stop()
    stt.stop()


@pytest.mark.slow
def test_speech_round_trip_gives_the_words_back(stack) -> None:
    env, tts_port, stt_port, tmp_path = stack
    config = GatewayConfig.from_settings(Settings({**env, "GATEWAY_STATE_DIR": str(tmp_path / "gw")}))
    with TestClient(create_app(config, CollectorRegistry())) as client:
        headers = {"X-API-Key": config.api_key_file.read_text().strip()}
        tts_ids = [client.post("/v1/jobs/tts", json={"text": s}, headers=headers).json()["id"]
                   for s in SENTENCES]
        spoken = wait_done(client, tts_ids, headers, 120)
        assert [s["status"] for s in spoken] == ["completed"] * len(SENTENCES)
        audio = [client.get(s["audio_url"], headers=headers) for s in spoken]
        assert all(a.status_code == 200 and a.headers["content-type"] == "audio/wav" for a in audio)

        stt_ids = [client.post("/v1/jobs/stt", files={"file": (f"{i}.wav", a.content, "audio/wav")},
                               headers=headers).json()["id"] for i, a in enumerate(audio)]
        heard = wait_done(client, stt_ids, headers, 180)
    assert [h["status"] for h in heard] == ["completed"] * len(SENTENCES)

    hypotheses = [h["result"]["text"] for h in heard]
    error_rate = jiwer.wer([words(s) for s in SENTENCES], [words(h) for h in hypotheses])
    assert error_rate <= 0.2, list(zip(SENTENCES, hypotheses, strict=True))

    for said, got in zip(spoken, heard, strict=True):
        result = got["result"]
        assert result["language"] == "en"
        assert abs(result["audio_seconds"] - said["result"]["audio_seconds"]) < 0.05
        # Whisper predicts the closing timestamp token; on short clips it can land up to about a second past
        # the end of the audio, so the bound allows 1 s.
        assert result["segments"] and all(0 <= s["start"] < s["end"] <= result["audio_seconds"] + 1.0
                                          for s in result["segments"]), (result["audio_seconds"], result["segments"])
        assert got["timings"]["queue_wait_s"] is not None and got["timings"]["processing_s"] > 0

    generated = sum(s["result"]["audio_seconds"] for s in spoken)
    for port, service in ((tts_port, "tts"), (stt_port, "stt")):
        counted = metric(port, "model_worker_audio_seconds_total", service=service)
        assert counted == pytest.approx(generated, 0.01)
    completed = metric(stt_port, "model_worker_jobs_total", service="stt", status="completed")
    assert completed == len(SENTENCES)
    # Six jobs arrived while the first batch ran: fewer model calls than jobs means they were batched.
    calls = metric(stt_port, "model_worker_batch_size_count", service="stt")
    assert calls < len(SENTENCES)
    assert metric(stt_port, "model_worker_busy_ratio", service="stt") > 0
    assert metric(stt_port, "model_worker_ready", service="stt") == 1


def test_undecodable_input_fails_once_without_retries(stack, redis_url: str) -> None:
    env, _, stt_port, tmp_path = stack
    config = GatewayConfig.from_settings(Settings({**env, "GATEWAY_STATE_DIR": str(tmp_path / "gw2")}))
    failed_before = metric(stt_port, "model_worker_jobs_total", service="stt", status="failed")
    with TestClient(create_app(config, CollectorRegistry())) as client:
        backend = client.app.state.backend
        # A producer that skipped the gateway's checks: the stored input is not audio.
        job_id = new_job_id("stt")

        async def submit() -> None:
            key = await backend.store_input("stt", job_id, b"definitely not audio")
            await backend.submit("stt", job_id, {"input_key": key, "owner": None})

        client.portal.call(submit)
        view = None
        for _ in range(100):
            view = client.portal.call(backend.get, job_id)
            if view.state in ("completed", "failed"):
                break
            time.sleep(0.2)
    assert view is not None and view.state == "failed"
    assert "does not decode" in view.error and view.attempts_made == 1  # attempts=3, but no retry
    assert metric(stt_port, "model_worker_jobs_total", service="stt", status="failed") == failed_before + 1
    assert metric(stt_port, "model_worker_jobs_total", service="stt", status="retried") == 0
