"""The worker's parts on their own: busy ratio window, token buckets, the batcher, batched Whisper."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import numpy as np
import pytest
from faster_whisper import decode_audio

from workers.core.env import Settings
from workers.gateway.ratelimit import TokenBuckets
from workers.stt.config import SttConfig
from workers.stt.whisper import WhisperTranscriber
from workers.worker.batcher import Batcher
from workers.worker.busy import BusyTracker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_busy_ratio_covers_the_last_window_only() -> None:
    clock = Clock()
    busy = BusyTracker(window_s=30, clock=clock)
    clock.now += 30
    busy.begin()
    clock.now += 15
    assert busy.ratio() == pytest.approx(0.5)  # busy for 15 of the last 30 s, still running
    busy.end()
    clock.now += 15
    assert busy.ratio() == pytest.approx(0.5)
    clock.now += 10
    assert busy.ratio() == pytest.approx(5 / 30)  # the window slid past most of it
    clock.now += 30
    assert busy.ratio() == 0.0


def test_busy_ratio_counts_overlapping_work_once_and_young_processes_fairly() -> None:
    clock = Clock()
    busy = BusyTracker(window_s=30, clock=clock)
    busy.begin()
    busy.begin()
    clock.now += 4
    busy.end()
    clock.now += 4
    busy.end()
    clock.now += 2
    assert busy.ratio() == pytest.approx(8 / 10)  # 10 s old: the window is its age
    with pytest.raises(RuntimeError):
        busy.end()


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=2, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0  # keys are independent
    clock.now += 0.5
    assert buckets.take("a") == 0
    assert TokenBuckets.retry_after_header(0.2) == "1" and TokenBuckets.retry_after_header(2.1) == "3"


def test_batcher_groups_waiting_items_and_isolates_failures() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def run_batch(items: list[int]) -> list[object]:
        calls.append(items)
        gate.wait(5)
        return [ValueError(f"bad {i}") if i == 3 else i * 10 for i in items]

    async def scenario() -> list[object]:
        busy = BusyTracker()
        batcher = Batcher(run_batch, max_batch=4, wait_s=0.05, busy=busy)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.1)  # the first batch is running (blocked on the gate)
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        assert busy.ratio() > 0
        gate.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert calls == [[0], [1, 2, 3, 4], [5]]  # at most max_batch per call, in arrival order
    assert results[:3] == [0, 10, 20] and results[4:] == [40, 50]
    assert isinstance(results[3], ValueError) and "bad 3" in str(results[3])


@pytest.fixture(scope="module")
def transcriber() -> WhisperTranscriber:
    model = WhisperTranscriber(SttConfig.from_settings(Settings({"STT_BATCH_SIZE": "4"})))
    model.load()
    return model


def test_batched_whisper_matches_one_by_one(transcriber: WhisperTranscriber, speech_wav: bytes,
                                            tmp_path) -> None:
    path = tmp_path / "speech.wav"
    path.write_bytes(speech_wav)
    speech = decode_audio(str(path), sampling_rate=16000)
    silence = np.zeros(16000, dtype=np.float32)
    twice = np.concatenate([speech, np.zeros(8000, dtype=np.float32), speech])
    clips = [speech, silence, twice]
    one_by_one = [transcriber.transcribe([clip], [None])[0] for clip in clips]
    start = time.perf_counter()
    batched = transcriber.transcribe(clips, [None, None, None])
    assert time.perf_counter() - start < 60
    assert [t.text for t in batched] == [t.text for t in one_by_one]
    assert "quick brown fox" in batched[0].text.lower()
    assert batched[1].text == "" and batched[1].segments == []
    # Both copies are transcribed. Some words vary with CPU thread scheduling in CTranslate2's int8 kernels
    # ("quick"/"quip", and "jumps"/"jumped" on a loaded machine), so the count is over words that are stable.
    text = batched[2].text.lower()
    assert (text.count("brown fox"), text.count("lazy dog")) == (2, 2), text
    assert batched[2].segments[-1].start >= batched[0].segments[-1].end  # timestamps in the clip's own time
    assert [t.audio_seconds for t in batched] == [round(len(c) / 16000, 3) for c in clips]


def test_failed_attempts_are_counted_as_retried_until_the_last_one(piper_voice) -> None:
    from bullmq import Job, Queue, UnrecoverableError
    from prometheus_client import CollectorRegistry
    from redis.asyncio import Redis

    from workers.queueing.blobs import BlobStore
    from workers.tts.service import TtsEngine
    from workers.worker.config import WorkerConfig
    from workers.worker.runner import WorkerProcess

    config = WorkerConfig.from_settings(Settings({"POD_NAME": "tts-0"}), "tts")
    redis = Redis.from_url(config.policy.redis_url)  # never connected: only the metrics are exercised
    engine = TtsEngine(config.tts, piper_voice, BlobStore(redis, "bull", "tts"), 60)
    registry = CollectorRegistry()
    process = WorkerProcess(config, engine, redis, registry)

    queue = Queue("tts", config.policy.connection_opts())  # never connected: a Job needs its queue object

    def job(attempts_made: int) -> Job:
        j = Job(queue, "tts", {"text": "x"}, {"attempts": 3, "jobId": "tts-" + "a" * 32})
        j.attemptsMade = attempts_made  # as BullMQ leaves it after moveToFailed
        return j

    process._on_failed(job(1), RuntimeError("model crashed"))
    process._on_failed(job(2), RuntimeError("model crashed"))
    process._on_failed(job(3), RuntimeError("model crashed"))
    process._on_failed(job(1), UnrecoverableError("bad input"))

    def count(status: str) -> float:
        return registry.get_sample_value("model_worker_jobs_total",
                                         {"service": "tts", "queue_name": "tts", "status": status})

    assert (count("retried"), count("failed"), count("completed")) == (2, 2, 0)
    info = registry.get_sample_value("model_worker_info", {
        "service": "tts", "queue_name": "tts", "pod": "tts-0", "node": "", "host": socket.gethostname(),
        "model": "piper:en_US-joe-medium.onnx", "device": "cpu", "compute_type": ""})
    assert info == 1
    assert registry.get_sample_value("model_worker_ready", {"service": "tts"}) == 0
