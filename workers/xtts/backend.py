"""The XTTS backend: Coqui's CoquiBackend (the Synthesizer loads the model directory the way `tts --model_path` does),
plus voice cloning from a reference recording given per call.

A voice is XTTS's pair of conditioning latents (the GPT's style latents and the HiFi-GAN decoder's speaker
embedding), computed from the reference by the model's own get_gpt_cond_latents and get_speaker_embedding with the
model config's cloning settings (gpt_cond_len, gpt_cond_chunk_len, max_ref_len, sound_norm_refs): what
Xtts.get_conditioning_latents does for one file, on audio decoded here (workers/xtts/audio.py). The default voice
(XTTS_SPEAKER_WAV) is computed once at load. Text is split into sentences by the Synthesizer's segmenter and each
sentence is spoken by Xtts.inference with the config's sampling settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.tts.base import DEFAULT_VOICE, Synthesis, UnknownVoice
from workers.tts.coqui_backend import CoquiBackend
from workers.xtts.audio import decode_reference
from workers.xtts.config import REFERENCE_RATE, XttsConfig

SENTENCE_GAP_S = 0.2  # silence between sentences


class TextTooLong(ValueError):
    """A sentence has more tokens than the model's GPT takes (model_args.gpt_max_text_tokens)."""


class NoVoice(ValueError):
    """No reference given and no default voice configured."""


@dataclass(frozen=True)
class Voice:
    gpt_cond_latent: Any  # torch.Tensor [1, T, model_dim]
    speaker_embedding: Any  # torch.Tensor [1, 512, 1]


_CACHE_KEYWORD_CLASSES: dict[type, type] = {}


def _accept_cache_keyword(model: Any) -> None:
    """transformers 5.25 renamed the generation cache argument `past_key_values` to `cache` and passes it to the model
    under the new name; coqui-tts 0.28.0's GPT2InferenceModel.forward still takes `past_key_values` only, so the cache
    was dropped and generation failed ("'NoneType' object has no attribute 'get_seq_length'"). This gives the loaded
    model's inference GPT a forward that takes either name; with a transformers that passes `past_key_values` it
    changes nothing. Only this model instance is changed (its class is swapped for a subclass), not Coqui's class."""
    inference = model.gpt.gpt_inference
    base = type(inference)
    if getattr(base, "_accepts_cache_keyword", False):
        return
    if base not in _CACHE_KEYWORD_CLASSES:
        class CacheKeywordInference(base):  # type: ignore[misc, valid-type]
            _accepts_cache_keyword = True

            def forward(self, input_ids=None, past_key_values=None, *args: Any, cache: Any = None, **kwargs: Any):
                return super().forward(input_ids, cache if past_key_values is None else past_key_values, *args,
                                       **kwargs)

        _CACHE_KEYWORD_CLASSES[base] = CacheKeywordInference
    inference.__class__ = _CACHE_KEYWORD_CLASSES[base]


class XttsBackend(CoquiBackend):
    name = "xtts"

    def __init__(self, config: XttsConfig) -> None:
        super().__init__(config.model_dir, config.device, config.language, config.speaker_wav)
        self.config = config
        self.default_voice: Voice | None = None

    @property
    def model(self) -> Any:
        assert self.synth is not None, "load() first"
        return self.synth.tts_model

    def load(self) -> None:
        super().load()
        _accept_cache_keyword(self.model)
        if self.config.speaker_wav is not None:
            what = f"XTTS_SPEAKER_WAV {str(self.config.speaker_wav)!r}"
            self.default_voice = self.clone(decode_reference(self.config.speaker_wav.read_bytes(), what))

    def clone(self, reference: np.ndarray) -> Voice:
        """The voice of a reference recording (22.05 kHz mono float32, workers/xtts/audio.py)."""
        import torch

        model = self.model
        cfg = model.config
        audio = torch.from_numpy(np.ascontiguousarray(reference[: REFERENCE_RATE * int(cfg.max_ref_len)]))[None]
        audio = audio.to(model.device)
        if cfg.sound_norm_refs:
            audio = (audio / torch.abs(audio).max()) * 0.75
        with torch.inference_mode():
            embedding = model.get_speaker_embedding(audio, REFERENCE_RATE)
            latent = model.get_gpt_cond_latents(audio, REFERENCE_RATE, length=cfg.gpt_cond_len,
                                                chunk_length=cfg.gpt_cond_chunk_len)
        return Voice(gpt_cond_latent=latent, speaker_embedding=embedding)

    def sentences(self, text: str, language: str) -> list[str]:
        """The sentences XTTS speaks one at a time; raises TextTooLong naming a sentence over the token limit."""
        assert self.synth is not None, "load() first"
        sentences = [s for s in self.synth.split_into_sentences(text, language) if s.strip()] or [text]
        limit = int(self.model.args.gpt_max_text_tokens)
        for i, sentence in enumerate(sentences):
            tokens = len(self.model.tokenizer.encode(sentence.strip().lower(), lang=language))
            if tokens >= limit:
                raise TextTooLong(f"sentence {i} ({sentence[:40]!r}...) has {tokens} tokens; the model takes fewer "
                                  f"than {limit} per sentence: split it")
        return sentences

    def speak(self, text: str, language: str, voice: Voice | None = None) -> Synthesis:
        """Speak text in language with voice (None: the default voice)."""
        import torch

        if language not in self.config.languages:
            raise ValueError(f"language {language!r} is not one of the model's: {list(self.config.languages)}")
        voice = voice or self.default_voice
        if voice is None:
            raise NoVoice("no reference voice given and no default voice (XTTS_SPEAKER_WAV) configured")
        model = self.model
        cfg = model.config
        settings = {"temperature": cfg.temperature, "length_penalty": cfg.length_penalty,
                    "repetition_penalty": cfg.repetition_penalty, "top_k": cfg.top_k, "top_p": cfg.top_p}
        gap = np.zeros(int(SENTENCE_GAP_S * self.sample_rate), dtype=np.float32)
        pieces: list[np.ndarray] = []
        with torch.inference_mode():
            for sentence in self.sentences(text, language):
                out = model.inference(sentence, language, voice.gpt_cond_latent, voice.speaker_embedding, **settings)
                pieces.extend([gap] if pieces else [])
                pieces.append(np.asarray(out["wav"], dtype=np.float32).reshape(-1))
        return Synthesis(np.concatenate(pieces), self.sample_rate)

    def synthesize(self, text: str, voice: str) -> Synthesis:
        """The TtsBackend interface: the default voice in the default language."""
        if voice != DEFAULT_VOICE:
            raise UnknownVoice(f"voice {voice!r} is not one of {[DEFAULT_VOICE]} (xtts clones a reference instead)")
        return self.speak(text, self.config.language)

    def voices(self) -> tuple[str, ...]:
        return (DEFAULT_VOICE,)

    def describe(self) -> str:
        random = (self.model_dir / "RANDOM_WEIGHTS.txt").is_file()
        return self.model_dir.name + (" (random weights)" if random else "")
