"""Model worker settings: which service and queue, the queue policy, the metrics endpoint, the model."""

from __future__ import annotations

from dataclasses import dataclass

from workers.core.common import ENGINES, Identity, MetricsEndpoint, QueuePolicy
from workers.core.env import ConfigError, Settings
from workers.lipsync.config import LipsyncConfig
from workers.mt.config import MtConfig
from workers.stt.config import SttConfig
from workers.tts.config import TtsConfig
from workers.xtts.config import XttsConfig

# 9105 is the dubbing orchestrator's (workers/dubbing), 9121 the queue exporter's.
DEFAULT_METRICS_PORTS = {"stt": 9101, "tts": 9102, "mt": 9103, "lipsync": 9104, "xtts": 9106}


@dataclass(frozen=True)
class WorkerConfig:
    service: str
    queue_name: str
    policy: QueuePolicy
    metrics: MetricsEndpoint
    identity: Identity
    busy_window_s: float
    stt: SttConfig | None
    tts: TtsConfig | None
    mt: MtConfig | None = None
    lipsync: LipsyncConfig | None = None
    xtts: XttsConfig | None = None

    @classmethod
    def from_settings(cls, s: Settings, service_arg: str | None = None) -> WorkerConfig:
        service = service_arg or s.text("SERVICE", "")
        if service not in ENGINES:
            name = "--service" if service_arg else "SERVICE"
            raise ConfigError(name, service, "one of " + ", ".join(ENGINES))
        return cls(
            service=service,
            queue_name=s.name("QUEUE_NAME", service),
            policy=QueuePolicy.from_settings(s),
            metrics=MetricsEndpoint.from_settings(s, DEFAULT_METRICS_PORTS[service]),
            identity=Identity.from_settings(s),
            busy_window_s=s.number("BUSY_WINDOW_S", 30.0, 1.0, 3600.0),
            stt=SttConfig.from_settings(s) if service == "stt" else None,
            tts=TtsConfig.from_settings(s) if service == "tts" else None,
            mt=MtConfig.from_settings(s) if service == "mt" else None,
            lipsync=LipsyncConfig.from_settings(s) if service == "lipsync" else None,
            xtts=XttsConfig.from_settings(s) if service == "xtts" else None,
        )
