"""Marian translation on CTranslate2: SentencePiece in, one batched ``translate_batch`` call, SentencePiece out.

What "batching" means here: the segments of every job in a batch are translated in one call (CTranslate2 sorts
them by length and pads within its own sub-batches), and the results are mapped back to their jobs. Tokenization
is Marian's: the source SentencePiece model's pieces and ``</s>`` (what ``MarianTokenizer.encode`` produces),
with ``>>xx<<`` in front for a multi-target model; the output pieces are joined by the target SentencePiece
model. tests/workers/test_mt.py checks that this equals transformers' MarianTokenizer and MarianMTModel.generate.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from workers.mt.config import MtConfig

EOS = "</s>"
LANGUAGE_TOKEN = re.compile(r"^>>[A-Za-z_]{2,8}<<$")  # a multi-target model's >>xx<<: an input, never an output


@dataclass(frozen=True)
class Translation:
    segments: list[str]
    tokens_in: int
    tokens_out: int


class TooLong(ValueError):
    """A segment over MT_MAX_INPUT_TOKENS; the message names it."""


class MarianTranslator:
    def __init__(self, config: MtConfig) -> None:
        self.config = config
        self._translator = None
        self._source = None
        self._target = None

    def load(self) -> None:
        import ctranslate2
        import sentencepiece

        c = self.config
        self._source = sentencepiece.SentencePieceProcessor(model_file=str(c.model / "source.spm"))
        self._target = sentencepiece.SentencePieceProcessor(model_file=str(c.model / "target.spm"))
        self._translator = ctranslate2.Translator(str(c.model), device=c.device, compute_type=c.compute_type,
                                                  intra_threads=c.cpu_threads)
        if len(c.target_languages) > 1:
            missing = [t for t in c.target_languages if not self._source_has(f">>{t}<<")]
            if missing:
                raise ValueError(f"MT_TARGET_LANGUAGES names {missing}, but the model at {c.model} has no "
                                 f"{', '.join(f'>>{t}<<' for t in missing)} token: it is not a multi-target "
                                 "model for them")

    def _source_has(self, token: str) -> bool:
        """Whether the model's source vocabulary (the converter's JSON list) holds ``token``."""
        for name in ("shared_vocabulary.json", "source_vocabulary.json"):
            f = self.config.model / name
            if f.is_file():
                return token in json.loads(f.read_text())
        return False

    def tokenize(self, segments: list[str], target: str) -> list[list[str]]:
        """The source tokens of each segment; TooLong names the first one over the limit."""
        assert self._source is not None, "load() first"
        prefix = [f">>{target}<<"] if len(self.config.target_languages) > 1 else []
        out = []
        for i, text in enumerate(segments):
            pieces = prefix + self._source.encode(text, out_type=str) + [EOS]
            if len(pieces) - 1 > self.config.max_input_tokens:
                raise TooLong(f"segment {i} has {len(pieces) - 1} tokens; the limit is "
                              f"{self.config.max_input_tokens} (MT_MAX_INPUT_TOKENS): split it")
            out.append(pieces)
        return out

    def translate(self, jobs: list[list[list[str]]]) -> list[Translation]:
        """Each job's tokenized segments -> its translations, all in one translate_batch call."""
        assert self._translator is not None and self._target is not None, "load() first"
        flat = [seg for job in jobs for seg in job]
        c = self.config
        results = self._translator.translate_batch(
            flat, beam_size=c.beam_size, max_decoding_length=c.max_decoding_length, max_batch_size=64,
        ) if flat else []
        out, k = [], 0
        for job in jobs:
            hyps = [r.hypotheses[0] for r in results[k:k + len(job)]]
            k += len(job)
            out.append(Translation(
                segments=[self._target.decode([p for p in h if p != EOS and not LANGUAGE_TOKEN.match(p)])
                          for h in hyps],
                tokens_in=sum(len(s) for s in job),
                tokens_out=sum(len(h) for h in hyps),
            ))
        return out
