"""Whisper transcription of several clips in one batched model call.

What "batching" means here: the audio of every job in a batch is cut into speech chunks of at most 30 s
(Silero VAD, as faster-whisper's BatchedInferencePipeline does for one file), and the chunks of *all* the
jobs are encoded and decoded together, `batch_size` chunks per CTranslate2 call. A batch of four 5-second
clips is therefore one encoder pass and one generate call with four rows, instead of four of each.
The per-chunk decoding is BatchedInferencePipeline.forward, so segment splitting and timestamps are
faster-whisper's own; what this module adds is the grouping across jobs and mapping results back to them.
Not done in batched mode: conditioning a chunk on the previous chunk's text (as in BatchedInferencePipeline).
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import Segment as FwSegment
from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens, restore_speech_timestamps
from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

from workers.stt.config import SttConfig

SAMPLE_RATE = 16000
CHUNK_S = 30
# faster-whisper's own defaults for the options this module does not choose itself.
_DEFAULTS = {
    name: p.default for name, p in inspect.signature(BatchedInferencePipeline.transcribe).parameters.items()
}


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    segments: list[Segment]
    language: str
    audio_seconds: float


@dataclass
class _Clip:
    index: int
    audio: np.ndarray
    language: str
    speech: list[dict[str, int]] = field(default_factory=list)
    segments: list[FwSegment] = field(default_factory=list)


class WhisperTranscriber:
    def __init__(self, config: SttConfig) -> None:
        self.config = config
        self.model: WhisperModel | None = None
        self.pipeline: BatchedInferencePipeline | None = None

    def load(self) -> None:
        self.model = WhisperModel(self.config.model, device=self.config.device,
                                  compute_type=self.config.compute_type, cpu_threads=self.config.cpu_threads)
        self.pipeline = BatchedInferencePipeline(self.model)

    def _options(self, tokenizer: Tokenizer) -> TranscriptionOptions:
        return TranscriptionOptions(
            beam_size=self.config.beam_size, best_of=self.config.beam_size, patience=1, length_penalty=1,
            repetition_penalty=1, no_repeat_ngram_size=0, log_prob_threshold=-1.0, no_speech_threshold=0.6,
            compression_ratio_threshold=2.4, condition_on_previous_text=False,
            prompt_reset_on_temperature=0.5,
            temperatures=[0.0], initial_prompt=None, prefix=None, suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]), without_timestamps=False,
            max_initial_timestamp=0.0, word_timestamps=False,
            prepend_punctuations=_DEFAULTS["prepend_punctuations"],
            append_punctuations=_DEFAULTS["append_punctuations"], multilingual=False, max_new_tokens=None,
            clip_timestamps=[], hallucination_silence_threshold=None, hotwords=None,
        )

    def _language(self, audio: np.ndarray, requested: str | None) -> str:
        assert self.model is not None
        if not self.model.model.is_multilingual:
            return "en"
        if requested:
            return requested
        language, _, _ = self.model.detect_language(audio=audio)
        return language

    def transcribe(self, clips: list[np.ndarray], languages: list[str | None]) -> list[Transcript]:
        """Transcribe 16 kHz mono float32 clips; one Transcript per clip, in order."""
        assert self.model is not None and self.pipeline is not None
        work = [_Clip(i, audio, self._language(audio, lang or self.config.language))
                for i, (audio, lang) in enumerate(zip(clips, languages, strict=True))]
        by_language: dict[str, list[_Clip]] = defaultdict(list)
        for clip in work:
            by_language[clip.language].append(clip)
        for language, group in by_language.items():
            self._decode_group(language, group)
        return [self._transcript(clip) for clip in work]

    def _decode_group(self, language: str, group: list[_Clip]) -> None:
        assert self.model is not None and self.pipeline is not None
        tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual,
                              task="transcribe", language=language)
        options = self._options(tokenizer)
        features, metadata, owners = [], [], []
        vad = VadOptions(max_speech_duration_s=CHUNK_S, min_silence_duration_ms=160)
        for clip in group:
            clip.speech = get_speech_timestamps(clip.audio, vad)
            if not clip.speech:
                continue  # silence: no chunk to decode, the transcript is empty
            chunks, chunk_meta = collect_chunks(clip.audio, clip.speech, max_duration=CHUNK_S)
            for chunk, meta in zip(chunks, chunk_meta, strict=True):
                features.append(pad_or_trim(self.model.feature_extractor(chunk)[..., :-1]))
                metadata.append(meta)
                owners.append(clip)
        size = self.config.batch_size
        for start in range(0, len(features), size):
            outputs = self.pipeline.forward(np.stack(features[start:start + size]), tokenizer,
                                            metadata[start:start + size], options)
            for clip, chunk_segments in zip(owners[start:start + size], outputs, strict=True):
                for seg in chunk_segments:
                    clip.segments.append(FwSegment(
                        id=len(clip.segments), seek=seg["seek"], start=seg["start"], end=seg["end"],
                        text=seg["text"], tokens=seg["tokens"], avg_logprob=seg["avg_logprob"],
                        compression_ratio=seg["compression_ratio"], no_speech_prob=seg["no_speech_prob"],
                        words=None, temperature=0.0))

    def _transcript(self, clip: _Clip) -> Transcript:
        restored = []
        if clip.speech:
            restored = list(restore_speech_timestamps(clip.segments, clip.speech, SAMPLE_RATE))
        segments = [Segment(start=round(s.start, 3), end=round(s.end, 3), text=s.text.strip())
                    for s in restored if s.text.strip()]
        return Transcript(text=" ".join(s.text for s in segments), segments=segments, language=clip.language,
                          audio_seconds=round(len(clip.audio) / SAMPLE_RATE, 3))
