"""Run a dubbing job step by step as its stages finish (BullMQ's "process step jobs" pattern; workers/dubbing/flow.py).

    step stt      the transcript (segments with times) -> one mt job with the segments' texts
    step mt       the translations -> one tts job per segment
    step tts      the clips laid on the source's timeline (mix.py) -> the dubbed audio; with a video, one lipsync
                  job; without, the dubbing job completes with the audio
    step lipsync  the lip-synced MP4 -> the dubbing job completes with it

Each step records what it added in the job's data (``stages``: the child ids per stage, ``step``), then moves the job
to waiting-children; BullMQ runs it again when they are all done, and fails it when one fails (failParentOnFailure).

A failed child sends the dubbing job back to wait with a deferred failure (BullMQ's moveToFinished script), and
this worker fails it when it takes it; its siblings would still run (a dubbing job's twenty TTS jobs, one of them
failed, leave nineteen for nobody). ``sweep_failed`` removes them: for each dubbing
job failed since the last sweep it runs BullMQ's removeUnprocessedChildren script (the one Node's
``Job.removeUnprocessedChildren`` runs; the Python package ships it without a wrapper), which removes every child
no worker holds, and records their ids in the job's ``cancelled``. A child a worker is running finishes and is kept
like any finished job.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bullmq import Job, Queue, UnrecoverableError, WaitingChildrenError
from bullmq.redis_connection import loadScript
from redis.asyncio import Redis

from workers.core.common import QueuePolicy
from workers.dubbing.flow import child_id, child_options
from workers.dubbing.mix import mix
from workers.queueing.blobs import BlobStore

log = logging.getLogger(__name__)


class Orchestrator:
    def __init__(self, policy: QueuePolicy, queues: dict[str, str], redis: Redis, voice: str = "default") -> None:
        self.policy = policy
        self.voice = voice
        self.queues = {s: Queue(queues[s], policy.connection_opts()) for s in ("mt", "tts", "lipsync") if s in queues}
        self.blobs = {s: BlobStore(redis, policy.prefix, name) for s, name in queues.items()}
        self.dubbing = Queue(queues["dubbing"], policy.connection_opts())
        self.redis = redis
        self._remove_unprocessed = redis.register_script(loadScript("removeUnprocessedChildren-2.lua"))
        self._swept_since = 0.0
        self._swept_edge: set[str] = set()

    async def close(self) -> None:
        for q in (*self.queues.values(), self.dubbing):
            await q.close()

    async def sweep_failed(self) -> dict[str, list[str]]:
        """Remove the unprocessed children of every dubbing job failed since the last call: {dubbing id: removed
        child ids}. The failed set is scored by finish time; the jobs at the last score seen are remembered, so a
        job failing in that same millisecond is swept too and none is swept twice."""
        failed_key = self.dubbing.toKey("failed")
        entries = await self.redis.zrangebyscore(failed_key, self._swept_since, "+inf", withscores=True)
        swept: dict[str, list[str]] = {}
        for raw, score in entries:
            jid = raw.decode() if isinstance(raw, bytes) else raw
            if score == self._swept_since and jid in self._swept_edge:
                continue
            if score > self._swept_since:
                self._swept_since, self._swept_edge = score, set()
            self._swept_edge.add(jid)
            job_key = self.dubbing.toKey(jid)
            before = {k.decode() if isinstance(k, bytes) else k
                      for k in await self.redis.smembers(f"{job_key}:dependencies")}
            await self._remove_unprocessed(keys=[job_key, self.dubbing.keys["meta"]],
                                           args=[self.dubbing.toKey(""), jid])
            after = {k.decode() if isinstance(k, bytes) else k
                     for k in await self.redis.smembers(f"{job_key}:dependencies")}
            removed = sorted(k.rsplit(":", 1)[-1] for k in before - after)
            swept[jid] = removed
            if removed:
                job = await Job.fromId(self.dubbing, jid)
                if job is not None:
                    await job.updateData({**job.data, "cancelled": sorted({*job.data.get("cancelled", []), *removed})})
                log.info("dubbing job failed: its unprocessed stage jobs removed",
                         extra={"job_id": jid, "removed": len(removed)})
        return swept

    async def _add(self, job: Job, stage: str, index: int, data: dict[str, Any]) -> str:
        if stage not in self.queues:
            raise UnrecoverableError(f"stage {stage}: no {stage} queue is configured (QUEUES); the dubbing job needs "
                                     "stt, mt, tts and, for a video, lipsync")
        jid = child_id(job.id, stage, index)
        await self.queues[stage].add(stage, {**data, "owner": job.data.get("owner"), "dubbing_id": job.id},
                                     child_options(self.policy, jid, job.id, job.queueQualifiedName))
        return jid

    async def process(self, job: Job, token: str) -> dict[str, Any] | None:
        data = dict(job.data)
        values = {k.rsplit(":", 1)[-1]: v for k, v in (await job.getChildrenValues()).items()}
        stages: dict[str, list[str]] = dict(data.get("stages") or {})
        step = data.get("step")
        now = round(time.time(), 3)
        marks = dict(data.get("stage_done_at") or {})
        marks[step] = now
        if step == "stt":
            transcript = values[stages["stt"][0]]
            segments = [s for s in transcript.get("segments") or [] if str(s.get("text", "")).strip()]
            if not segments:
                raise UnrecoverableError("stage stt: no speech was found in the media (0 segments): nothing to dub")
            stages["mt"] = [await self._add(job, "mt", 0, {
                "segments": [s["text"].strip() for s in segments], "target_language": data["target_language"],
                "media_seconds": transcript.get("audio_seconds", 0.0)})]
            data.update(step="mt", segments=[{k: s[k] for k in ("start", "end", "text")} for s in segments],
                        source_seconds=transcript.get("audio_seconds", 0.0), source_language=transcript.get("language"))
        elif step == "mt":
            translations = values[stages["mt"][0]]["segments"]
            stages["tts"] = [await self._add(job, "tts", i, {"text": t, "voice": data.get("voice") or self.voice})
                             for i, t in enumerate(translations)]
            data.update(step="tts", translations=translations)
        elif step == "tts":
            clips = []
            for jid in stages["tts"]:
                key = (values.get(jid) or {}).get("audio_key")
                clip = await self.blobs["tts"].get(key) if key else None
                if clip is None:
                    raise UnrecoverableError(f"stage tts: job {jid} has no audio (expired after its TTL?)")
                clips.append(clip)
            wav, seconds, placed = mix(clips, [s["start"] for s in data["segments"]], data.get("source_seconds", 0.0))
            data.update(dubbed_seconds=round(seconds, 3), placed_at=placed)
            if data.get("video_key"):
                audio_key = await self.blobs["lipsync"].put(job.id, "dubbed", wav, self.policy.input_ttl_s)
                stages["lipsync"] = [await self._add(job, "lipsync", 0, {"video_key": data["video_key"],
                                                                         "audio_key": audio_key})]
                data.update(step="lipsync")
            else:
                key = await self.blobs["dubbing"].put(job.id, "output", wav, self.policy.result_ttl_s)
                return self._result(data, stages, marks, audio_key=key)
        elif step == "lipsync":
            out = values[stages["lipsync"][0]]
            return self._result(data, stages, marks, video_key=out["video_key"], frames=out.get("frames"),
                                fps=out.get("fps"))
        else:
            raise UnrecoverableError(f"dubbing job {job.id} is at an unknown step {step!r}")
        data.update(stages=stages, stage_done_at=marks)
        await job.updateData(data)
        log.info("dubbing step", extra={"job_id": job.id, "next": data["step"], "children": len(stages[data["step"]])})
        if await job.moveToWaitingChildren(token, {}):
            raise WaitingChildrenError()
        # Every child finished before the move (they can be that quick): run the next step now.
        return await self.process(job, token)

    @staticmethod
    def _result(data: dict[str, Any], stages: dict[str, list[str]], marks: dict[str, float],
                **out: Any) -> dict[str, Any]:
        return {**out, "target_language": data["target_language"], "source_language": data.get("source_language"),
                "segments": len(data.get("segments") or []), "source_seconds": data.get("source_seconds"),
                "dubbed_seconds": data.get("dubbed_seconds"), "stages": stages, "stage_done_at": marks}
