"""The gateway as operators run it: `python -m workers.gateway` under uvicorn, over a real socket."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

import httpx
import pytest
from workers_testlib import Proc, base_env, free_port, http_get, wait_for


@pytest.fixture
def served_gateway(redis_url: str, prefix: str, tmp_path: Path):
    port = free_port()
    key_file = tmp_path / "operator" / "api-key"
    env = base_env(REDIS_URL=redis_url, QUEUE_PREFIX=prefix, GATEWAY_PORT=str(port),
                   GATEWAY_STATE_DIR=str(tmp_path / "state"), GATEWAY_API_KEY_FILE=str(key_file),
                   GATEWAY_MAX_UPLOAD_BYTES="200000")
    proc = Proc(["-m", "workers.gateway"], env, tmp_path / "gateway.log")
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, "gateway ready")
        yield f"http://127.0.0.1:{port}", key_file, proc
    finally:
        proc.stop()


def test_served_gateway_accepts_jobs_and_keeps_the_key_private(served_gateway, speech_wav: bytes) -> None:
    base, key_file, proc = served_gateway
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
        submitted = client.post("/v1/jobs/stt", files={"file": ("s.wav", speech_wav, "audio/wav")})
        assert submitted.status_code == 202, submitted.text
        status = client.get(submitted.json()["status_url"])
        assert status.status_code == 200 and status.json()["status"] == "waiting"
        metrics = client.get("/metrics").text
    assert 'gateway_jobs_submitted_total{service="stt"} 1.0' in metrics
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    log = proc.log()
    assert key not in log, "the API key must never be logged"
    assert '"msg": "generated the first API key"' in log


def test_oversized_upload_is_cut_off_with_413_even_without_content_length(served_gateway) -> None:
    base, key_file, _ = served_gateway
    headers = {"X-API-Key": key_file.read_text().strip(),
               "Content-Type": "multipart/form-data; boundary=xyz"}

    def chunks():  # a generator body is sent chunked: no Content-Length to trust
        yield b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
        for _ in range(30):
            yield b"\0" * 10_000

    with httpx.Client(base_url=base) as client:
        declared = client.post("/v1/jobs/stt", content=b"\0" * 300_000, headers=headers)
        streamed = client.post("/v1/jobs/stt", content=chunks(), headers=headers)
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "upload_too_large"
        assert "200000 bytes" in response.json()["error"]["message"]
