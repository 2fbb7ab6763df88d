"""Queue exporter settings."""

from __future__ import annotations

from dataclasses import dataclass

from workers.core.common import Identity, MetricsEndpoint
from workers.core.env import ConfigError, Settings
from workers.core.queues_setting import QueueRef, parse_queues


def parse_extra_queues(s: Settings, known: list[QueueRef]) -> list[QueueRef]:
    """EXTRA_QUEUES: more queues to export that no model service consumes (the load tests' policy self-test
    pushes a scripted backlog into them), entries `name` or `name:queue_type` (default type `extra`)."""
    raw = s.text("EXTRA_QUEUES", "")
    refs: list[QueueRef] = []
    for entry in (item.strip() for item in raw.split(",")):
        if not entry:
            continue
        name, _, kind = entry.partition(":")
        kind = kind or "extra"
        for part in (name, kind):
            if not part or not all(c.isalnum() or c in "-_." for c in part):
                raise ConfigError("EXTRA_QUEUES", raw, f"entries `name` or `name:queue_type`; bad part {part!r}")
        if any(ref.name == name for ref in [*known, *refs]):
            raise ConfigError("EXTRA_QUEUES", raw, f"each queue once (QUEUES and EXTRA_QUEUES); {name!r} repeats")
        refs.append(QueueRef(name=name, service=kind))
    return refs


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
            queues=(queues := parse_queues(s)) + parse_extra_queues(s, queues),
            metrics=MetricsEndpoint.from_settings(s, 9121),
            identity=Identity.from_settings(s),
            timeout_s=s.number("EXPORTER_TIMEOUT_S", 3.0, 0.1, 60.0),
        )
