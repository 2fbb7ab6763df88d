"""Queue exporter settings."""

from __future__ import annotations

from dataclasses import dataclass

from workers.core.common import Identity, MetricsEndpoint
from workers.core.env import Settings
from workers.core.queues_setting import QueueRef, parse_queues


@dataclass(frozen=True)
class ExporterConfig:
    redis_url: str
    prefix: str
    queues: list[QueueRef]
    metrics: MetricsEndpoint
    identity: Identity
    timeout_s: float

    @classmethod
    def from_settings(cls, s: Settings) -> ExporterConfig:
        return cls(
            redis_url=s.redis_url("REDIS_URL", "redis://127.0.0.1:6379/0"),
            prefix=s.name("QUEUE_PREFIX", "bull"),
            queues=parse_queues(s),
            metrics=MetricsEndpoint.from_settings(s, 9121),
            identity=Identity.from_settings(s),
            timeout_s=s.number("EXPORTER_TIMEOUT_S", 3.0, 0.1, 60.0),
        )
