"""TTS worker settings: backend, model location, device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workers.core.env import ConfigError, Settings

BACKENDS = ("piper", "coqui")


@dataclass(frozen=True)
class TtsConfig:
    backend: str
    model_dir: Path | None
    device: str
    language: str
    speaker_wav: Path | None

    @classmethod
    def from_settings(cls, s: Settings) -> TtsConfig:
        backend = s.choice("TTS_BACKEND", "piper", BACKENDS)
        raw_dir = s.optional("TTS_MODEL_DIR")
        model_dir = Path(raw_dir) if raw_dir else None
        if backend == "coqui":
            if model_dir is None:
                raise ConfigError("TTS_MODEL_DIR", "", "a Coqui model directory with config.json and a "
                                  "checkpoint (required when TTS_BACKEND=coqui)")
            if not (model_dir / "config.json").is_file():
                raise ConfigError("TTS_MODEL_DIR", raw_dir, "an existing Coqui model directory containing "
                                  "config.json and a checkpoint (.pth)")
        elif model_dir is not None and not (
            model_dir.is_dir() or (model_dir.is_file() and model_dir.suffix == ".onnx")
        ):
            raise ConfigError("TTS_MODEL_DIR", raw_dir, "an existing Piper voice: a .onnx file with its "
                              ".onnx.json, or a directory holding them (unset: the bundled en_US joe voice)")
        speaker_wav = s.optional("TTS_SPEAKER_WAV")
        if speaker_wav is not None and not Path(speaker_wav).is_file():
            raise ConfigError("TTS_SPEAKER_WAV", speaker_wav, "an existing reference WAV file (XTTS)")
        return cls(
            backend=backend,
            model_dir=model_dir,
            device=s.choice("TTS_DEVICE", "cpu", ("cpu", "cuda")),
            language=s.text("TTS_LANGUAGE", "en"),
            speaker_wav=Path(speaker_wav) if speaker_wav else None,
        )
