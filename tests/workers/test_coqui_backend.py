"""The coqui backend loads a VITS model directory through Coqui's own loading code and synthesizes.

The model has random weights (built from its config; nothing downloaded), so the audio is noise: the
test checks what the worker relies on (loading, sample rate, shape, duration, WAV encoding, job flow).
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from bullmq import Queue
from coqui_model import SAMPLE_RATE, build_random_vits
from workers_testlib import start_worker, wait_for

from workers.core.env import Settings
from workers.tts.config import TtsConfig
from workers.tts.factory import make_backend


@pytest.fixture(scope="module")
def vits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_vits(tmp_path_factory.mktemp("vits"))


def test_random_vits_loads_and_synthesizes_through_the_worker_backend(vits_dir: Path) -> None:
    config = TtsConfig.from_settings(Settings({"TTS_BACKEND": "coqui", "TTS_MODEL_DIR": str(vits_dir)}))
    backend = make_backend(config)
    backend.load()
    assert backend.voices() == ("default",)
    short = backend.synthesize("Hello world.", "default")
    longer = backend.synthesize("Hello world. This sentence is quite a bit longer than the first.", "default")
    for result in (short, longer):
        assert result.sample_rate == SAMPLE_RATE
        assert result.samples.ndim == 1 and result.samples.dtype == np.float32
        assert np.isfinite(result.samples).all() and np.abs(result.samples).max() > 0
        assert result.duration_s == pytest.approx(len(result.samples) / SAMPLE_RATE)
    assert longer.duration_s > short.duration_s  # more text, more audio, even with random weights
    decoded, rate = sf.read(io.BytesIO(short.wav_bytes()), dtype="float32")
    assert rate == SAMPLE_RATE and len(decoded) == len(short.samples)
    with pytest.raises(ValueError, match="'nobody'"):
        backend.synthesize("hi", "nobody")


@pytest.mark.slow
def test_coqui_worker_process_completes_a_job(vits_dir: Path, redis_url: str, prefix: str, tmp_path: Path,
                                              redis_client) -> None:
    env = {"REDIS_URL": redis_url, "QUEUE_PREFIX": prefix, "TTS_BACKEND": "coqui",
           "TTS_MODEL_DIR": str(vits_dir)}
    worker, _ = start_worker(tmp_path, "coqui", "tts", env, ready_timeout=120)
    try:
        async def submit() -> str:
            queue = Queue("tts", {"connection": redis_url, "prefix": prefix})
            job = await queue.add("tts", {"text": "Testing one two three.", "voice": "default"},
                                  {"jobId": "tts-" + "c" * 32})
            await queue.close()
            return job.id

        job_id = asyncio.run(submit())
        wait_for(lambda: redis_client.zscore(f"{prefix}:tts:completed", job_id) is not None, 60, "coqui job")
        result = json.loads(redis_client.hget(f"{prefix}:tts:{job_id}", "returnvalue"))
        assert result["sample_rate"] == SAMPLE_RATE and result["backend"] == f"coqui:{vits_dir.name}"
        wav = redis_client.get(result["audio_key"])
        samples, rate = sf.read(io.BytesIO(wav))
        assert rate == SAMPLE_RATE
        assert len(samples) / rate == pytest.approx(result["audio_seconds"], abs=0.001)
    finally:
        worker.stop()
