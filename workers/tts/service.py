"""The TTS job adapter: text and voice in, WAV stored in a Redis key with a TTL, metadata record out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bullmq import Job, UnrecoverableError

from workers.queueing.blobs import BlobStore
from workers.tts.base import DEFAULT_VOICE, Synthesis, TtsBackend
from workers.tts.config import TtsConfig
from workers.worker.engine import Engine


@dataclass(frozen=True)
class TtsInput:
    text: str
    voice: str


class TtsEngine(Engine):
    service = "tts"
    max_batch = 1  # Piper and Coqui synthesize one utterance per call; jobs run one at a time

    def __init__(self, config: TtsConfig, backend: TtsBackend, blobs: BlobStore, result_ttl_s: int) -> None:
        self.config = config
        self.backend = backend
        self.blobs = blobs
        self.result_ttl_s = result_ttl_s

    def load(self) -> None:
        self.backend.load()

    async def prepare(self, job: Job) -> TtsInput:
        data = job.data if isinstance(job.data, dict) else {}
        text, voice = data.get("text"), data.get("voice", DEFAULT_VOICE)
        if not isinstance(text, str) or not text.strip():
            raise UnrecoverableError(f"job data 'text' must be a non-empty string (got {text!r:.40})")
        if voice not in self.backend.voices():
            raise UnrecoverableError(f"voice {voice!r:.40} is not one of {list(self.backend.voices())}")
        return TtsInput(text=text, voice=voice)

    def run_batch(self, items: list[TtsInput]) -> list[Any]:
        outputs: list[Any] = []
        for item in items:
            try:
                outputs.append(self.backend.synthesize(item.text, item.voice))
            except Exception as exc:
                outputs.append(exc)
        return outputs

    async def finish(self, job: Job, output: Synthesis) -> dict[str, Any]:
        wav = output.wav_bytes()
        key = await self.blobs.put(job.id, "output", wav, self.result_ttl_s)
        return {"audio_key": key, "format": "wav", "sample_rate": output.sample_rate,
                "audio_seconds": round(output.duration_s, 3), "bytes": len(wav),
                "voice": job.data.get("voice", DEFAULT_VOICE), "backend": self.backend.describe()}

    def audio_seconds(self, item: TtsInput, output: Synthesis) -> float:
        return output.duration_s

    def describe(self) -> dict[str, str]:
        return {"model": self.backend.describe(), "device": self.config.device, "compute_type": ""}
