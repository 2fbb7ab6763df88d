"""Gateway settings, read from the environment and validated before the server starts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from workers.core.common import Identity, QueuePolicy
from workers.core.env import ConfigError, Settings
from workers.core.queues_setting import parse_queues
from workers.mt.config import parse_languages
from workers.xtts.config import XTTS_V2_LANGUAGES, parse_language_list


def _default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "model-gateway")


@dataclass(frozen=True)
class GatewayConfig:
    host: str
    port: int
    state_dir: Path
    api_key_file: Path
    queues: dict[str, str]  # service -> queue name
    policy: QueuePolicy
    identity: Identity
    max_upload_bytes: int
    max_audio_seconds: float
    max_text_chars: int
    max_json_bytes: int
    rate_per_s: float
    rate_burst: int
    voices: tuple[str, ...]
    # The mt service's target languages (its MT_TARGET_LANGUAGES, passed to the gateway too); empty: any
    # language code is taken and the worker refuses one its model lacks.
    mt_target_languages: tuple[str, ...] = ()
    max_segments: int = 256
    max_video_bytes: int = 100 * 1024 * 1024
    max_video_seconds: float = 120.0
    key_store: str = "redis"  # redis: keys and rate limits shared by all replicas; file: this process only
    # How long a submission waits for BullMQ's add before answering 503 (BullMQ waits for Redis to come back).
    queue_timeout_s: float = 5.0
    # The xtts service's languages (its model's config.json "languages"; default: XTTS v2's 17): another language is
    # refused with 422 (the worker checks its model's list again).
    xtts_languages: tuple[str, ...] = XTTS_V2_LANGUAGES
    # Whether the xtts workers have a default voice (XTTS_SPEAKER_WAV): without one a job with no reference is 422.
    xtts_default_voice: bool = False

    @classmethod
    def from_settings(cls, s: Settings) -> GatewayConfig:
        refs = parse_queues(s)
        queues: dict[str, str] = {}
        for ref in refs:
            if ref.service in queues:
                raise ConfigError("QUEUES", s.text("QUEUES", ""), "at most one queue per service for the "
                                  f"gateway; {ref.service!r} has {queues[ref.service]!r} and {ref.name!r}")
            queues[ref.service] = ref.name
        state_dir = Path(s.text("GATEWAY_STATE_DIR", _default_state_dir()))
        if state_dir.exists() and not state_dir.is_dir():
            raise ConfigError("GATEWAY_STATE_DIR", str(state_dir),
                              "a directory (or a path where one can be made)")
        return cls(
            host=s.text("GATEWAY_HOST", "127.0.0.1"),
            port=s.port("GATEWAY_PORT", 8080),
            state_dir=state_dir,
            api_key_file=Path(s.text("GATEWAY_API_KEY_FILE", str(state_dir / "first-api-key"))),
            queues=queues,
            policy=QueuePolicy.from_settings(s),
            identity=Identity.from_settings(s),
            max_upload_bytes=s.integer("GATEWAY_MAX_UPLOAD_BYTES", 10 * 1024 * 1024, 1024, 1024**3),
            max_audio_seconds=s.number("GATEWAY_MAX_AUDIO_SECONDS", 300.0, 1.0, 86400.0),
            max_text_chars=s.integer("GATEWAY_MAX_TEXT_CHARS", 1000, 1, 1_000_000),
            max_json_bytes=s.integer("GATEWAY_MAX_JSON_BYTES", 64 * 1024, 1024, 64 * 1024 * 1024),
            rate_per_s=s.number("GATEWAY_RATE_LIMIT_PER_S", 20.0, 0.01, 1e6),
            rate_burst=s.integer("GATEWAY_RATE_LIMIT_BURST", 40, 1, 10**7),
            voices=tuple(s.name_list("TTS_VOICES", "default")),
            mt_target_languages=parse_languages("MT_TARGET_LANGUAGES", s.text("MT_TARGET_LANGUAGES", ""),
                                                allow_empty=True),
            max_segments=s.integer("GATEWAY_MAX_SEGMENTS", 256, 1, 100_000),
            max_video_bytes=s.integer("GATEWAY_MAX_VIDEO_BYTES", 100 * 1024 * 1024, 1024, 16 * 1024**3),
            max_video_seconds=s.number("GATEWAY_MAX_VIDEO_SECONDS", 120.0, 1.0, 86400.0),
            key_store=s.choice("GATEWAY_KEY_STORE", "redis", ("redis", "file")),
            queue_timeout_s=s.number("GATEWAY_QUEUE_TIMEOUT_S", 5.0, 0.1, 300.0),
            xtts_languages=parse_language_list("XTTS_LANGUAGES",
                                               s.text("XTTS_LANGUAGES", ",".join(XTTS_V2_LANGUAGES))),
            xtts_default_voice=s.choice("XTTS_DEFAULT_VOICE", "false", ("true", "false")) == "true",
        )
