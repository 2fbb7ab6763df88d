"""Per-key token bucket: in Redis, shared by every gateway replica (the default), or in one process's memory."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token for key: 0.0 if allowed, else the seconds until a token is available."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(tokens=self._burst, updated=now)
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self._rate

    @staticmethod
    def retry_after_header(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))


# One atomic step of a token bucket kept in a Redis hash. The clock is Redis' own (TIME), so replicas on hosts with
# different clocks share one timeline. Returns the seconds to wait, "0" when a token was taken.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisTokenBuckets:
    """The same bucket per key as TokenBuckets, kept in Redis (`<prefix>:gateway:ratelimit:<key id>`), so the limit
    holds for the key across all replicas instead of multiplying by their number."""

    def __init__(self, client: redis.Redis, prefix: str, rate_per_s: float, burst: int) -> None:
        self._script = client.register_script(_TAKE)
        self._prefix = f"{prefix}:gateway:ratelimit:"
        self._rate = rate_per_s
        self._burst = burst

    def take(self, key: str) -> float:
        return float(self._script(keys=[self._prefix + key], args=[repr(self._rate), self._burst]))

    retry_after_header = staticmethod(TokenBuckets.retry_after_header)
