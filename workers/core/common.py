"""Settings every process shares: Redis, queue naming and job policy, metrics endpoint, identity."""

from __future__ import annotations

from dataclasses import dataclass

from workers.core.env import Settings

# The job kinds this code implements (an engine each: workers/stt, workers/tts, workers/mt, workers/lipsync,
# workers/xtts: the TTS engine on the Coqui backend pinned to an XTTS model, cloning a reference voice).
# Which services exist, their queues and their policies are configuration (harness_services, passed as QUEUES and
# --service); a service's queue_type names one of these.
ENGINES = ("stt", "tts", "mt", "lipsync", "xtts")
# Job kinds that chain the engines' jobs (workers/dubbing: a BullMQ flow over stt, mt, tts and lipsync); run by
# their own orchestrator process, not by workers.worker.
PIPELINES = ("dubbing",)


@dataclass(frozen=True)
class Identity:
    pod_name: str | None
    node_name: str | None
    log_level: str

    @classmethod
    def from_settings(cls, s: Settings) -> Identity:
        return cls(
            pod_name=s.optional("POD_NAME"),
            node_name=s.optional("NODE_NAME"),
            log_level=s.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
        )


@dataclass(frozen=True)
class QueuePolicy:
    """How jobs are retried, locked and kept. Producers and workers must agree on these."""

    redis_url: str
    prefix: str
    attempts: int
    backoff_ms: int
    lock_duration_ms: int
    stalled_interval_ms: int
    max_stalled_count: int
    result_ttl_s: int
    input_ttl_s: int

    @classmethod
    def from_settings(cls, s: Settings) -> QueuePolicy:
        lock_ms = s.integer("QUEUE_LOCK_DURATION_MS", 30000, 1000, 3_600_000)
        stalled_ms = s.integer("QUEUE_STALLED_INTERVAL_MS", 30000, 500, 3_600_000)
        attempts = s.integer("QUEUE_ATTEMPTS", 3, 1, 100)
        return cls(
            redis_url=s.redis_url("REDIS_URL", "redis://127.0.0.1:6379/0"),
            prefix=s.name("QUEUE_PREFIX", "bull"),
            attempts=attempts,
            backoff_ms=s.integer("QUEUE_BACKOFF_MS", 1000, 0, 3_600_000),
            lock_duration_ms=lock_ms,
            stalled_interval_ms=stalled_ms,
            # A stall (the worker died holding the job) costs the job a run as a failed attempt does, but
            # BullMQ counts it apart (the job's `stc`) and fails the job once it stalled more than this: by
            # default a job may lose as many runs to stalls as it has retries (attempts - 1), so a job whose
            # worker is killed twice with 3 attempts is run a third time, not failed.
            max_stalled_count=s.integer("QUEUE_MAX_STALLED_COUNT", attempts - 1, 0, 100),
            result_ttl_s=s.integer("QUEUE_RESULT_TTL_S", 3600, 1, 30 * 86400),
            input_ttl_s=s.integer("QUEUE_INPUT_TTL_S", 3600, 1, 30 * 86400),
        )

    def connection_opts(self) -> dict[str, object]:
        return {"connection": self.redis_url, "prefix": self.prefix}


@dataclass(frozen=True)
class MetricsEndpoint:
    host: str
    port: int

    @classmethod
    def from_settings(cls, s: Settings, default_port: int) -> MetricsEndpoint:
        return cls(host=s.text("METRICS_HOST", "127.0.0.1"), port=s.port("METRICS_PORT", default_port))
