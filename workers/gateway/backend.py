"""The gateway's side of the queues: submit jobs to BullMQ, read their state and results back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import redis.exceptions
from bullmq import FlowProducer, Job, Queue
from redis.asyncio import Redis

from workers.core.common import QueuePolicy
from workers.queueing.blobs import BlobStore
from workers.queueing.jobs import job_options, service_of


@dataclass(frozen=True)
class JobView:
    id: str
    service: str
    state: str
    owner: str | None
    result: Any
    error: str | None
    attempts_made: int
    created_ms: int | None
    started_ms: int | None
    finished_ms: int | None
    data: dict[str, Any] | None = None

    def timings(self) -> dict[str, float | None]:
        def secs(later: int | None, earlier: int | None) -> float | None:
            return None if later is None or earlier is None else round((later - earlier) / 1000, 3)

        return {
            "created_at_ms": self.created_ms,
            "started_at_ms": self.started_ms,
            "finished_at_ms": self.finished_ms,
            "queue_wait_s": secs(self.started_ms, self.created_ms),
            "processing_s": secs(self.finished_ms, self.started_ms),
            "total_s": secs(self.finished_ms, self.created_ms),
        }


def _ms(value: object) -> int | None:
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number or None


class JobBackend:
    def __init__(self, policy: QueuePolicy, queues: dict[str, str], submit_timeout_s: float = 5.0) -> None:
        self.policy = policy
        self.submit_timeout_s = submit_timeout_s
        self.redis = Redis.from_url(policy.redis_url)
        self.queues = {service: Queue(name, policy.connection_opts()) for service, name in queues.items()}
        self.blobs = {service: BlobStore(self.redis, policy.prefix, name) for service, name in queues.items()}
        self.flows = FlowProducer(policy.connection_opts())

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except Exception:  # readiness answers "no" on any Redis failure
            return False

    async def submit(self, service: str, job_id: str, data: dict[str, Any]) -> None:
        """Queue the job. BullMQ's add waits for Redis to come back rather than failing, which would hold the
        client's request open for as long as Redis is down: after ``submit_timeout_s`` the add is cancelled (the
        script that adds a job is one EVALSHA: it ran or it did not) and the caller gets a Redis error (503)."""
        try:
            await asyncio.wait_for(
                self.queues[service].add(service, data, job_options(self.policy, job_id)), self.submit_timeout_s
            )
        except TimeoutError:
            raise redis.exceptions.TimeoutError(
                f"queue {self.queues[service].name}: Redis did not take the job within {self.submit_timeout_s:g} s"
            ) from None

    async def submit_flow(self, flow: dict[str, Any]) -> None:
        """Add a flow (a parent job and its children) in one MULTI/EXEC, with submit's timeout."""
        try:
            await asyncio.wait_for(self.flows.add(flow), self.submit_timeout_s)
        except TimeoutError:
            raise redis.exceptions.TimeoutError(
                f"flow {flow.get('name')}: Redis did not take it within {self.submit_timeout_s:g} s") from None

    async def store_input(self, service: str, job_id: str, data: bytes, kind: str = "input") -> str:
        return await self.blobs[service].put(job_id, kind, data, self.policy.input_ttl_s)

    async def get(self, job_id: str) -> JobView | None:
        service = service_of(job_id)
        if service not in self.queues:
            return None
        queue = self.queues[service]
        # State first, then the job hash: BullMQ writes the return value in the same script that moves the job to
        # `completed`, so a job read after a "completed" state always carries its result. Read the other way
        # round, a job finishing between the two reads looked completed with no result (a TTS job without its
        # audio_url).
        state = await queue.getJobState(job_id)
        job = await Job.fromId(queue, job_id)
        if job is None:
            return None
        return JobView(
            id=job_id,
            service=service,
            state=state,
            owner=(job.data or {}).get("owner") if isinstance(job.data, dict) else None,
            result=job.returnvalue if state == "completed" else None,
            error=job.failedReason or None,
            attempts_made=int(job.attemptsMade or 0),
            created_ms=_ms(job.timestamp),
            started_ms=_ms(job.processedOn),
            finished_ms=_ms(job.finishedOn),
            data=job.data if isinstance(job.data, dict) else None,
        )

    async def output(self, view: JobView, field: str = "audio_key") -> bytes | None:
        """The blob a result names (``audio_key``, ``video_key``), from the queue whose key space holds it: a
        dubbing job's MP4 is the lipsync stage's."""
        key = (view.result or {}).get(field) if isinstance(view.result, dict) else None
        if not isinstance(key, str):
            return None
        for store in self.blobs.values():
            if store.holds(key):
                return await store.get(key)
        return None

    async def close(self) -> None:
        await self.flows.close()
        for queue in self.queues.values():
            await queue.close()
        await self.redis.aclose()
