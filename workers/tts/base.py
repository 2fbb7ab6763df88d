"""The interface every TTS backend implements, and the audio it returns."""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import soundfile as sf

DEFAULT_VOICE = "default"


class UnknownVoice(ValueError):
    pass


@dataclass(frozen=True)
class Synthesis:
    samples: np.ndarray  # mono float32 in [-1, 1]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    def wav_bytes(self) -> bytes:
        buffer = io.BytesIO()
        sf.write(buffer, np.clip(self.samples, -1.0, 1.0), self.sample_rate, format="WAV", subtype="PCM_16")
        return buffer.getvalue()


class TtsBackend(ABC):
    name: str

    @abstractmethod
    def load(self) -> None:
        """Load the model; called once, before the worker reports ready."""

    @abstractmethod
    def voices(self) -> tuple[str, ...]:
        """Voice names accepted by synthesize(); always includes 'default'."""

    @abstractmethod
    def synthesize(self, text: str, voice: str) -> Synthesis:
        """Speak text with voice; raises UnknownVoice for a voice not in voices()."""

    def describe(self) -> str:
        return self.name
