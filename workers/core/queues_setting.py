"""The QUEUES setting: which BullMQ queues exist and which service each one feeds.

Format: comma-separated entries, each `name` (the queue is named after its service) or `name:service`,
for example `QUEUES=stt,tts` or `QUEUES=stt-gpu:stt,tts:tts`.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.core.common import ENGINES, PIPELINES
from workers.core.env import ConfigError, Settings


@dataclass(frozen=True)
class QueueRef:
    name: str
    service: str


def parse_queues(s: Settings, var: str = "QUEUES", default: str = "stt,tts") -> list[QueueRef]:
    refs: list[QueueRef] = []
    raw = s.text(var, default)
    for entry in s.name_list(var, default):
        name, _, service = entry.partition(":")
        service = service or name
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise ConfigError(var, raw, f"entries `name` or `name:service`; bad queue name {name!r}")
        if service not in ENGINES + PIPELINES:
            raise ConfigError(var, raw, f"entries `name` or `name:service` with service one of "
                                        f"{', '.join(ENGINES + PIPELINES)}; got service {service!r}")
        if any(ref.name == name for ref in refs):
            raise ConfigError(var, raw, f"each queue once; {name!r} is listed twice")
        refs.append(QueueRef(name=name, service=service))
    return refs
