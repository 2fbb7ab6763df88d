"""Binary payloads (uploaded audio, synthesized WAV) kept in Redis keys with a TTL, next to the queue.

Why not in the job data: BullMQ stores job data as a JSON string in the job hash and hands the whole hash
around (moveToActive returns it to every worker that takes the job, GET /v1/jobs/{id} reads it), so a
10 MB upload would be base64-encoded (+33 %) and copied on every read and retry. A separate key is written
once, read once by the worker, and expires by itself even if no one ever asks for the job again.
"""

from __future__ import annotations

from redis.asyncio import Redis


class BlobStore:
    def __init__(self, redis: Redis, prefix: str, queue_name: str) -> None:
        self._redis = redis
        self._base = f"{prefix}:{queue_name}:blob"

    def key(self, job_id: str, kind: str) -> str:
        return f"{self._base}:{job_id}:{kind}"

    async def put(self, job_id: str, kind: str, data: bytes, ttl_s: int) -> str:
        key = self.key(job_id, kind)
        await self._redis.set(key, data, ex=ttl_s)
        return key

    def holds(self, key: str) -> bool:
        return key.startswith(self._base + ":")

    async def get(self, key: str) -> bytes | None:
        if not self.holds(key):
            raise ValueError(f"blob key {key!r} is outside {self._base!r}")
        return await self._redis.get(key)

    async def require(self, key: str, what: str) -> bytes:
        """A job's input blob, or UnrecoverableError naming ``what``: a key of another queue, or one gone (expired
        after its TTL)."""
        from bullmq import UnrecoverableError

        try:
            payload = await self.get(key)
        except ValueError as exc:  # a key of another queue
            raise UnrecoverableError(str(exc)) from exc
        if payload is None:
            raise UnrecoverableError(f"{what} {key!r} is missing (expired after its TTL?)")
        return payload

    async def delete(self, key: str) -> None:
        await self._redis.delete(key)
