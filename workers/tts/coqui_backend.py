"""Coqui TTS (VITS, XTTS and the other Coqui models) loaded from a model directory.

Loading goes through Coqui's own Synthesizer, the same path `tts --model_path` uses: config.json names the
model class, the checkpoint is loaded into it, and synthesis splits sentences and runs the model. XTTS loads
from the directory itself and needs a reference voice (TTS_SPEAKER_WAV) or one of its built-in speakers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from workers.tts.base import DEFAULT_VOICE, Synthesis, TtsBackend, UnknownVoice

CHECKPOINT_NAMES = ("model.pth", "best_model.pth", "model_file.pth", "checkpoint.pth")


def find_checkpoint(model_dir: Path) -> Path:
    """The checkpoint to load: the directory itself for XTTS, else the first known checkpoint file."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model") == "xtts":
        return model_dir
    for name in CHECKPOINT_NAMES:
        if (model_dir / name).is_file():
            return model_dir / name
    others = sorted(model_dir.glob("*.pth"))
    if not others:
        raise FileNotFoundError(f"no checkpoint ({', '.join(CHECKPOINT_NAMES)} or *.pth) in {model_dir}")
    return others[0]


class CoquiBackend(TtsBackend):
    name = "coqui"

    def __init__(self, model_dir: Path, device: str, language: str, speaker_wav: Path | None) -> None:
        self.model_dir = model_dir
        self.checkpoint = find_checkpoint(model_dir)
        self.device = device
        self.language = language
        self.speaker_wav = speaker_wav
        self.synth = None
        self._speakers: tuple[str, ...] = ()
        self._multilingual = False

    def load(self) -> None:
        from TTS.utils.synthesizer import Synthesizer

        self.synth = Synthesizer(tts_checkpoint=self.checkpoint,
                                 tts_config_path=self.model_dir / "config.json",
                                 use_cuda=self.device == "cuda")
        model = self.synth.tts_model
        manager = getattr(model, "speaker_manager", None)
        self._speakers = tuple(manager.speaker_names) if manager is not None and manager.speaker_names else ()
        languages = getattr(getattr(model, "language_manager", None), "language_names", None)
        self._multilingual = bool(languages) or self.checkpoint.is_dir()

    @property
    def sample_rate(self) -> int:
        assert self.synth is not None, "load() first"
        return int(self.synth.output_sample_rate)

    def voices(self) -> tuple[str, ...]:
        return (DEFAULT_VOICE, *self._speakers)

    def synthesize(self, text: str, voice: str) -> Synthesis:
        assert self.synth is not None, "load() first"
        if voice not in self.voices():
            raise UnknownVoice(f"voice {voice!r} is not one of {list(self.voices())}")
        speaker = None
        if voice != DEFAULT_VOICE:
            speaker = voice
        elif self._speakers and self.speaker_wav is None:
            speaker = self._speakers[0]
        wav = self.synth.tts(text, speaker_name=speaker,
                             language_name=self.language if self._multilingual else None,
                             speaker_wav=str(self.speaker_wav) if self.speaker_wav else None)
        return Synthesis(np.asarray(wav, dtype=np.float32), self.sample_rate)

    def describe(self) -> str:
        return f"coqui:{self.model_dir.name}"
