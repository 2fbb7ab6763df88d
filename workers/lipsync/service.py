"""The lipsync job adapter: a video and the dubbed audio (Redis keys) in, an MP4 (a Redis key with a TTL) out.

Job data: ``{"video_key": ..., "audio_key": ...}`` (blobs of this queue, as the gateway stores them), optionally
``face_box`` ([x0, y0, x1, y1], fractions of the frame) in place of LIPSYNC_FACE_BOX. The result's ``video_key``
names the MP4; its duration is the audio's (one frame per 1/fps of audio).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
from bullmq import Job, UnrecoverableError

from workers.core.env import ConfigError
from workers.lipsync.config import LipsyncConfig, parse_box
from workers.lipsync.media import SAMPLE_RATE, MediaError, Video, decode_audio, decode_video, encode_mp4
from workers.lipsync.render import LipSyncer
from workers.queueing.blobs import BlobStore
from workers.worker.engine import Engine


@dataclass
class LipsyncInput:
    video: Video
    audio: np.ndarray
    box: tuple[float, float, float, float]

    @property
    def audio_seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE


@dataclass
class LipsyncOutput:
    mp4: bytes
    frames: int
    fps: float
    seconds: float


class LipsyncEngine(Engine):
    service = "lipsync"
    max_batch = 1  # one video per model pass; its frames are batched (LIPSYNC_BATCH_FRAMES)

    def __init__(self, config: LipsyncConfig, blobs: BlobStore, result_ttl_s: int) -> None:
        self.config = config
        self.blobs = blobs
        self.result_ttl_s = result_ttl_s
        self.syncer = LipSyncer(config)

    def load(self) -> None:
        self.syncer.load()

    async def _blob(self, data: dict[str, Any], field: str) -> bytes:
        key = data.get(field)
        if not isinstance(key, str):
            raise UnrecoverableError(f"job data has no {field!r} string (got {str(key)[:40]!r})")
        return await self.blobs.require(key, field)

    async def prepare(self, job: Job) -> LipsyncInput:
        data = job.data if isinstance(job.data, dict) else {}
        video_bytes, audio_bytes = await self._blob(data, "video_key"), await self._blob(data, "audio_key")
        try:
            box = parse_box("face_box", data["face_box"]) if "face_box" in data else self.config.face_box
        except ConfigError as exc:
            raise UnrecoverableError(str(exc)) from exc
        limit = self.config.max_video_seconds
        try:
            video = await asyncio.to_thread(decode_video, video_bytes, limit)
            audio = await asyncio.to_thread(decode_audio, audio_bytes, limit)
        except MediaError as exc:
            raise UnrecoverableError(str(exc)) from exc
        return LipsyncInput(video, audio, box)

    def run_batch(self, items: list[LipsyncInput]) -> list[Any]:
        outputs: list[Any] = []
        for item in items:
            try:
                frames = self.syncer.render(item.video, item.audio, item.box)
                mp4 = encode_mp4(frames, item.video.fps, item.audio)
                outputs.append(LipsyncOutput(mp4, len(frames), item.video.fps, len(frames) / item.video.fps))
            except Exception as exc:
                outputs.append(exc)
        return outputs

    async def finish(self, job: Job, output: LipsyncOutput) -> dict[str, Any]:
        key = await self.blobs.put(job.id, "output", output.mp4, self.result_ttl_s)
        return {"video_key": key, "format": "mp4", "frames": output.frames, "fps": round(output.fps, 3),
                "duration_s": round(output.seconds, 3), "bytes": len(output.mp4), "model": self.describe()["model"]}

    def audio_seconds(self, item: LipsyncInput, output: LipsyncOutput) -> float:
        return item.audio_seconds

    async def completed(self, job: Job) -> None:
        data = job.data if isinstance(job.data, dict) else {}
        for field in ("video_key", "audio_key"):
            if isinstance(data.get(field), str):
                await self.blobs.delete(data[field])

    def describe(self) -> dict[str, str]:
        # A model built by workers/lipsync/model.py's build_random says so in every result and in model_worker_info.
        random = (self.config.model / "RANDOM_WEIGHTS.txt").is_file()
        return {"model": self.config.model.name + (" (random weights)" if random else ""),
                "device": self.config.device, "compute_type": "float32"}
