"""The gateway API through FastAPI's TestClient against a real Redis and real BullMQ queues."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from bullmq import Job, Queue
from fastapi.testclient import TestClient
from gateway_cases import CASES, LIMITS, Audio, Case
from prometheus_client import CollectorRegistry

from workers.core.env import Settings
from workers.gateway.app import create_app
from workers.gateway.config import GatewayConfig
from workers.gateway.keys import ApiKeyStore


def make_config(redis_url: str, prefix: str, state: Path, **extra: str) -> GatewayConfig:
    env = {"REDIS_URL": redis_url, "QUEUE_PREFIX": prefix, "GATEWAY_STATE_DIR": str(state), **LIMITS, **extra}
    return GatewayConfig.from_settings(Settings(env))


@pytest.fixture
def gateway(redis_url: str, prefix: str, tmp_path: Path):
    config = make_config(redis_url, prefix, tmp_path / "state")
    app = create_app(config, CollectorRegistry())
    key = config.api_key_file.read_text().strip()
    with TestClient(app) as client:
        yield client, key, config


@pytest.fixture(scope="module")
def audio(speech_samples) -> Audio:
    samples, rate = speech_samples
    return Audio(samples, rate)


def auth_headers(kind: str, key: str) -> dict[str, str]:
    return {
        "good": {"Authorization": f"Bearer {key}"},
        "none": {},
        "bad": {"X-API-Key": "mgw_wrongkey"},
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
    }[kind]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_request_is_rejected_with_a_message_naming_the_problem(gateway, audio: Audio, case: Case) -> None:
    client, key, _ = gateway
    kwargs = case.request(audio)
    headers = {**auth_headers(case.auth, key), **kwargs.pop("headers", {})}
    response = client.request(case.method, case.path, headers=headers, **kwargs)
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert error["code"] == case.code
    for word in case.mentions:
        assert word in error["message"], (word, error["message"])


def test_rate_limit_answers_429_with_retry_after(redis_url: str, prefix: str, tmp_path: Path) -> None:
    config = make_config(redis_url, prefix, tmp_path / "s", GATEWAY_RATE_LIMIT_PER_S="0.5",
                         GATEWAY_RATE_LIMIT_BURST="3")
    with TestClient(create_app(config, CollectorRegistry())) as client:
        headers = {"X-API-Key": config.api_key_file.read_text().strip()}
        codes = [client.post("/v1/jobs/tts", json={"text": "hello"}, headers=headers) for _ in range(4)]
    assert [r.status_code for r in codes] == [202, 202, 202, 429]
    limited = codes[-1]
    assert limited.headers["Retry-After"] == "2"  # one token per 2 s
    assert limited.json()["error"]["code"] == "rate_limited"
    assert "0.5 requests/s" in limited.json()["error"]["message"]


def test_tts_job_is_queued_in_bullmq_with_retry_policy(gateway, redis_url: str, prefix: str) -> None:
    client, key, config = gateway
    response = client.post("/v1/jobs/tts", json={"text": "  Hello there.  "}, headers={"X-API-Key": key})
    assert response.status_code == 202
    body = response.json()
    assert body["id"].startswith("tts-") and response.headers["Location"] == body["status_url"]

    async def read():
        queue = Queue("tts", {"connection": redis_url, "prefix": prefix})
        try:
            return await Job.fromId(queue, body["id"]), await queue.getJobState(body["id"])
        finally:
            await queue.close()

    import asyncio

    job, state = asyncio.run(read())
    assert state == "waiting"
    assert job.data["text"] == "Hello there." and job.data["voice"] == "default"
    assert job.opts["attempts"] == config.policy.attempts
    assert job.opts["backoff"] == {"type": "exponential", "delay": config.policy.backoff_ms}
    status = client.get(body["status_url"], headers={"X-API-Key": key}).json()
    assert status["status"] == "waiting" and status["result"] is None
    assert status["timings"]["created_at_ms"] > 0


def test_stt_upload_is_stored_once_in_redis_with_a_ttl(gateway, audio: Audio, redis_client) -> None:
    client, key, config = gateway
    # A FLAC file named .mp3: the content decides, not the name.
    files = {"file": ("misnamed.mp3", audio.flac, "audio/mpeg")}
    response = client.post("/v1/jobs/stt", files=files, headers={"X-API-Key": key})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    job_hash = redis_client.hgetall(f"{config.policy.prefix}:stt:{job_id}")
    data = json.loads(job_hash[b"data"])
    assert data["format"] == "FLAC" and 2.0 < data["audio_seconds"] < 4.0
    assert redis_client.get(data["input_key"]) == audio.flac  # the bytes, not base64 in the job
    assert 0 < redis_client.ttl(data["input_key"]) <= config.policy.input_ttl_s


def test_jobs_are_visible_only_to_the_key_that_submitted_them(redis_url: str, prefix: str, tmp_path: Path) -> None:
    config = make_config(redis_url, prefix, tmp_path / "state", GATEWAY_KEY_STORE="file")
    client = TestClient(create_app(config, CollectorRegistry())).__enter__()
    key = config.api_key_file.read_text().strip()
    other = ApiKeyStore(config.state_dir)
    other.load_or_init(config.api_key_file)
    second_key = other.add_key()
    job_id = client.post("/v1/jobs/tts", json={"text": "mine"}, headers={"X-API-Key": key}).json()["id"]
    # The running app loaded the key file at start; a new app sees both keys.
    app = create_app(config, CollectorRegistry())
    with TestClient(app) as fresh:
        assert fresh.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": key}).status_code == 200
        denied = fresh.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": second_key})
    assert denied.status_code == 404 and denied.json()["error"]["code"] == "job_not_found"
    client.__exit__(None, None, None)


def test_api_keys_are_stored_hashed_in_private_files(tmp_path: Path, redis_url: str, prefix: str) -> None:
    config = make_config(redis_url, prefix, tmp_path / "state", GATEWAY_KEY_STORE="file")
    create_app(config, CollectorRegistry())
    plaintext = config.api_key_file.read_text().strip()
    state_file = config.state_dir / "api_keys.json"
    for path in (state_file, config.api_key_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert plaintext not in state_file.read_text()
    assert len(json.loads(state_file.read_text())["keys"]) == 1
    # A restart keeps the key and does not write a new plaintext file.
    config.api_key_file.unlink()
    create_app(config, CollectorRegistry())
    assert not config.api_key_file.exists()
    assert ApiKeyStore(config.state_dir).verify(plaintext) is None  # not loaded yet
    store = ApiKeyStore(config.state_dir)
    store.load_or_init(config.api_key_file)
    assert store.verify(plaintext) is not None and store.verify(plaintext + "x") is None


def test_metrics_count_requests_by_route_template_and_submissions(gateway) -> None:
    client, key, _ = gateway
    client.post("/v1/jobs/tts", json={"text": "one"}, headers={"X-API-Key": key})
    client.post("/v1/jobs/tts", json={"text": ""}, headers={"X-API-Key": key})
    client.get("/v1/jobs/tts-0123456789abcdef0123456789abcdef", headers={"X-API-Key": key})
    text = client.get("/metrics").text
    assert 'gateway_jobs_submitted_total{service="tts"} 1.0' in text
    assert 'gateway_jobs_submitted_total{service="stt"} 0.0' in text
    assert 'gateway_requests_total{code="202",route="/v1/jobs/tts"} 1.0' in text
    assert 'gateway_requests_total{code="422",route="/v1/jobs/tts"} 1.0' in text
    assert 'gateway_requests_total{code="404",route="/v1/jobs/{job_id}"} 1.0' in text
    assert 'gateway_request_duration_seconds_count{route="/v1/jobs/tts"} 2.0' in text


def test_health_readiness_and_openapi(gateway) -> None:
    client, _, _ = gateway
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    expected = {"/v1/jobs/stt", "/v1/jobs/tts", "/v1/jobs/{job_id}", "/healthz", "/readyz", "/metrics"}
    assert expected <= set(paths)
    assert "multipart/form-data" in paths["/v1/jobs/stt"]["post"]["requestBody"]["content"]


def test_readyz_is_503_when_redis_is_unreachable(tmp_path: Path, prefix: str) -> None:
    from workers_testlib import free_port

    config = make_config(f"redis://127.0.0.1:{free_port()}/0", prefix, tmp_path / "s")
    with TestClient(create_app(config, CollectorRegistry())) as client:
        response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "redis unreachable"


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_each_accepted_audio_format_is_detected_and_queued(gateway, audio: Audio, redis_client,
                                                           fmt: str) -> None:
    from gateway_cases import encode

    client, key, config = gateway
    upload = encode(audio.samples, audio.rate, fmt)
    files = {"file": ("upload.bin", upload)}
    response = client.post("/v1/jobs/stt", files=files, headers={"X-API-Key": key})
    assert response.status_code == 202, response.text
    job_hash = redis_client.hgetall(f"{config.policy.prefix}:stt:{response.json()['id']}")
    data = json.loads(job_hash[b"data"])
    assert data["format"] == fmt  # detected from the bytes: the file name says nothing
    assert data["audio_seconds"] == pytest.approx(len(audio.samples) / audio.rate, abs=0.1)


def test_api_keys_are_stored_hashed_in_redis(tmp_path: Path, redis_url: str, prefix: str, redis_client) -> None:
    config = make_config(redis_url, prefix, tmp_path / "state")  # the default store: redis
    create_app(config, CollectorRegistry())
    plaintext = config.api_key_file.read_text().strip()
    assert stat.S_IMODE(config.api_key_file.stat().st_mode) == 0o600
    stored = redis_client.hgetall(f"{prefix}:gateway:api_keys")
    assert len(stored) == 1 and plaintext.encode() not in b"".join([*stored, *stored.values()])
    assert not (config.state_dir / "api_keys.json").exists()


def test_a_submission_while_redis_is_down_is_503_not_500(gateway, audio: Audio, tmp_path: Path) -> None:
    """Seen in the chaos scenario: during a Redis restart an STT upload answered HTTP 500 (the blob write let the
    connection error through). The key check still works here; the job queue's Redis does not answer."""
    from dataclasses import replace

    from workers_testlib import free_port

    from workers.gateway.app import STT_PATH
    from workers.gateway.backend import JobBackend

    client, key, config = gateway
    dead = replace(config.policy, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client.app.state.backend = JobBackend(dead, config.queues)
    headers = {"Authorization": f"Bearer {key}"}
    # The upload's blob write is the first Redis call of an STT submission. (A TTS submission goes straight to
    # BullMQ's Queue.add, which waits for Redis to come back instead of failing: not judged here.)
    response = client.post(STT_PATH, headers=headers, files={"file": ("a.wav", audio.wav, "audio/wav")})
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "queue_unavailable"
    assert response.headers["Retry-After"] == "5"


@pytest.mark.timeout(30)
def test_a_tts_submission_while_redis_is_down_is_503_within_the_queue_timeout(gateway) -> None:
    """A TTS submission goes straight to BullMQ's Queue.add, which waits for Redis to come back: without a bound
    the request hung for as long as Redis was down (seen in the chaos scenario's Redis restart)."""
    import time
    from dataclasses import replace

    from workers_testlib import free_port

    from workers.gateway.backend import JobBackend

    client, key, config = gateway
    dead = replace(config.policy, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    backend = JobBackend(dead, config.queues)
    backend.submit_timeout_s = 1.0
    client.app.state.backend = backend
    started = time.monotonic()
    response = client.post("/v1/jobs/tts", json={"text": "Hello."}, headers={"Authorization": f"Bearer {key}"})
    elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "queue_unavailable"
    assert elapsed < 10, f"answered after {elapsed:.1f} s"


def test_mt_job_is_queued_with_its_segments_and_target(gateway, redis_url: str, prefix: str) -> None:
    import asyncio

    client, key, _ = gateway
    response = client.post("/v1/jobs/mt", json={"segments": ["Hello.", "How are you?"], "target_language": "fr"},
                           headers={"X-API-Key": key})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert job_id.startswith("mt-") and response.json()["service"] == "mt"

    async def read():
        queue = Queue("mt", {"connection": redis_url, "prefix": prefix})
        try:
            return await Job.fromId(queue, job_id)
        finally:
            await queue.close()

    job = asyncio.run(read())
    assert job.data["segments"] == ["Hello.", "How are you?"] and job.data["target_language"] == "fr"
    one = client.post("/v1/jobs/mt", json={"text": "Hi.", "target_language": "de"}, headers={"X-API-Key": key})
    assert one.status_code == 202
