"""The xtts job adapter: text, language and an optional reference voice (a Redis key) in, WAV (a Redis key with a TTL)
and a metadata record out. TtsEngine's loading, storage and metrics, with XTTS's inputs.

Job data: ``{"text": ..., "language": ... (default XTTS_LANGUAGE), "reference_key": ... (optional: a blob of this
queue, as the gateway stores an upload)}``. Without a reference the default voice (XTTS_SPEAKER_WAV) speaks; without
that too the job fails at once. Bad input fails with UnrecoverableError naming the value and what is allowed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
from bullmq import Job, UnrecoverableError

from workers.queueing.blobs import BlobStore
from workers.tts.base import Synthesis
from workers.tts.service import TtsEngine
from workers.xtts.audio import BadReference, decode_reference
from workers.xtts.backend import TextTooLong, XttsBackend
from workers.xtts.config import XttsConfig


@dataclass(frozen=True)
class XttsInput:
    text: str
    language: str
    reference: np.ndarray | None  # 22.05 kHz mono float32; None: the default voice


class XttsEngine(TtsEngine):
    service = "xtts"
    max_batch = 1  # one utterance per model call, as TTS

    def __init__(self, config: XttsConfig, backend: XttsBackend, blobs: BlobStore, result_ttl_s: int) -> None:
        super().__init__(config, backend, blobs, result_ttl_s)  # type: ignore[arg-type]
        self.config: XttsConfig = config  # type: ignore[assignment]
        self.backend: XttsBackend = backend

    async def prepare(self, job: Job) -> XttsInput:
        data = job.data if isinstance(job.data, dict) else {}
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            raise UnrecoverableError(f"job data 'text' must be a non-empty string (got {text!r:.40})")
        text = text.strip()
        limit = self.config.max_text_chars
        if len(text) > limit:
            raise UnrecoverableError(f"job data 'text' has {len(text)} characters; the limit is {limit} "
                                     "(XTTS_MAX_TEXT_CHARS)")
        language = data.get("language") or self.config.language
        if language not in self.config.languages:
            raise UnrecoverableError(f"language {str(language)[:20]!r} is not one of the model's languages: "
                                     f"{list(self.config.languages)}")
        try:
            self.backend.sentences(text, language)
        except TextTooLong as exc:
            raise UnrecoverableError(f"job data 'text': {exc}") from exc
        reference = await self._reference(data)
        if reference is None and self.backend.default_voice is None:
            raise UnrecoverableError("the job has no reference voice ('reference_key') and this worker has no default "
                                     "voice (XTTS_SPEAKER_WAV): send a reference recording of the speaker")
        return XttsInput(text=text, language=language, reference=reference)

    async def _reference(self, data: dict[str, Any]) -> np.ndarray | None:
        key = data.get("reference_key")
        if key is None:
            return None
        if not isinstance(key, str):
            raise UnrecoverableError(f"job data 'reference_key' must be a string (got {str(key)[:40]!r})")
        payload = await self.blobs.require(key, "reference voice")
        name = data.get("reference_filename")
        what = f"reference voice {str(name)[:60]!r}" if name else "the reference voice"
        try:
            return await asyncio.to_thread(decode_reference, payload, what)
        except BadReference as exc:
            raise UnrecoverableError(str(exc)) from exc

    def run_batch(self, items: list[XttsInput]) -> list[Any]:
        outputs: list[Any] = []
        for item in items:
            try:
                voice = self.backend.clone(item.reference) if item.reference is not None else None
                outputs.append(self.backend.speak(item.text, item.language, voice))
            except Exception as exc:
                outputs.append(exc)
        return outputs

    async def finish(self, job: Job, output: Synthesis) -> dict[str, Any]:
        wav = output.wav_bytes()
        key = await self.blobs.put(job.id, "output", wav, self.result_ttl_s)
        data = job.data if isinstance(job.data, dict) else {}
        return {"audio_key": key, "format": "wav", "sample_rate": output.sample_rate,
                "audio_seconds": round(output.duration_s, 3), "bytes": len(wav),
                "language": data.get("language") or self.config.language,
                "voice": "reference" if data.get("reference_key") else "default",
                "model": self.backend.describe()}

    async def completed(self, job: Job) -> None:
        # Only after BullMQ recorded the completion: a job re-run after a lost lock still needs its reference.
        key = (job.data or {}).get("reference_key") if isinstance(job.data, dict) else None
        if isinstance(key, str):
            await self.blobs.delete(key)

    def describe(self) -> dict[str, str]:
        return {"model": self.backend.describe(), "device": self.config.device, "compute_type": ""}
