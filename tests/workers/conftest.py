"""Fixtures for the worker tests: a private redis-server, unique queue prefixes, speech samples."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from workers_testlib import free_port, wait_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(REDIS_SERVER).exists():
        pytest.fail(f"redis-server not found at {REDIS_SERVER}: install Debian's redis-server")
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        wait_for(lambda: bool(client.ping()), 10, "redis-server")
    except AssertionError:
        proc.kill()
        raise
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix() -> str:
    """A BullMQ key prefix of its own per test, so tests never see each other's queues."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def piper_voice():
    from workers.tts.piper_backend import PiperBackend

    backend = PiperBackend(None, "cpu")
    backend.load()
    return backend


@pytest.fixture(scope="session")
def speech_wav(piper_voice) -> bytes:
    """A short English sentence synthesized by Piper, as 16-bit WAV."""
    return piper_voice.synthesize("The quick brown fox jumps over the lazy dog.", "default").wav_bytes()


@pytest.fixture(scope="session")
def speech_samples(piper_voice) -> tuple[np.ndarray, int]:
    synthesis = piper_voice.synthesize("The quick brown fox jumps over the lazy dog.", "default")
    return synthesis.samples, synthesis.sample_rate
