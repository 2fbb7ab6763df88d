"""Build the configured TTS backend. Imports are deferred so piper workers never import torch."""

from __future__ import annotations

from workers.tts.base import TtsBackend
from workers.tts.config import TtsConfig


def make_backend(config: TtsConfig) -> TtsBackend:
    if config.backend == "coqui":
        from workers.tts.coqui_backend import CoquiBackend

        assert config.model_dir is not None
        return CoquiBackend(config.model_dir, config.device, config.language, config.speaker_wav)
    from workers.tts.piper_backend import PiperBackend

    return PiperBackend(config.model_dir, config.device)
