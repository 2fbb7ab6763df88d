"""The STT job adapter: audio from the job's Redis key in, transcript record out."""

from __future__ import annotations

import asyncio
import io
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from bullmq import Job, UnrecoverableError
from faster_whisper import decode_audio

from workers.queueing.blobs import BlobStore
from workers.stt.config import SttConfig
from workers.stt.whisper import SAMPLE_RATE, Transcript, WhisperTranscriber
from workers.worker.engine import Engine


@dataclass(frozen=True)
class SttInput:
    audio: np.ndarray
    language: str | None


class SttEngine(Engine):
    service = "stt"

    def __init__(self, config: SttConfig, blobs: BlobStore) -> None:
        self.config = config
        self.blobs = blobs
        self.max_batch = config.batch_size
        self.batch_wait_s = config.batch_wait_ms / 1000
        self.transcriber = WhisperTranscriber(config)

    def load(self) -> None:
        self.transcriber.load()

    async def prepare(self, job: Job) -> SttInput:
        data = job.data if isinstance(job.data, dict) else {}
        key = data.get("input_key")
        if not isinstance(key, str):
            raise UnrecoverableError(f"job data has no 'input_key' string (got {key!r})")
        payload = await self.blobs.get(key)
        if payload is None:
            raise UnrecoverableError(f"input audio {key!r} is missing (expired after its TTL?)")
        try:
            audio = await asyncio.to_thread(decode_audio, io.BytesIO(payload), sampling_rate=SAMPLE_RATE)
        except Exception as exc:  # PyAV raises many types; any decode failure means bad input, not a retry
            raise UnrecoverableError(f"input audio {key!r} does not decode: {exc}") from exc
        language = data.get("language")
        return SttInput(audio=audio, language=language if isinstance(language, str) else None)

    def run_batch(self, items: list[SttInput]) -> list[Any]:
        try:
            return self.transcriber.transcribe([i.audio for i in items], [i.language for i in items])
        except Exception:
            if len(items) == 1:
                raise
        # One bad clip should not fail its batch-mates: retry them one by one to isolate the failure.
        outputs: list[Any] = []
        for item in items:
            try:
                outputs.extend(self.transcriber.transcribe([item.audio], [item.language]))
            except Exception as exc:
                outputs.append(exc)
        return outputs

    async def finish(self, job: Job, output: Transcript) -> dict[str, Any]:
        return asdict(output)

    def audio_seconds(self, item: SttInput, output: Transcript) -> float:
        return output.audio_seconds

    async def completed(self, job: Job) -> None:
        # Only after BullMQ recorded the completion: a job re-run after a lost lock still needs its input.
        key = (job.data or {}).get("input_key") if isinstance(job.data, dict) else None
        if isinstance(key, str):
            await self.blobs.delete(key)

    def describe(self) -> dict[str, str]:
        return {"model": self.config.model.rstrip("/").rsplit("/", 1)[-1], "device": self.config.device,
                "compute_type": self.config.compute_type}
