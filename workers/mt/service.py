"""The MT job adapter: segments and a target language in, translated segments out (the BullMQ return value).

Job data: ``{"segments": ["...", ...], "target_language": "de"}`` (or ``"text": "..."``, one segment), optionally
``source_language`` (must be the model's) and ``media_seconds`` (the media the text came from, for the cost per
dubbed minute; counted in model_worker_audio_seconds_total, 0 when absent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bullmq import Job, UnrecoverableError

from workers.mt.config import MtConfig
from workers.mt.marian import MarianTranslator, Translation
from workers.worker.engine import Engine


@dataclass(frozen=True)
class MtInput:
    tokens: list[list[str]]
    target: str
    media_seconds: float


def segments_of(data: dict[str, Any], max_segments: int) -> list[str]:
    """The job's segments, checked; bad data raises ValueError naming it and what is allowed."""
    if "segments" in data:
        segs = data["segments"]
        if not isinstance(segs, list) or not segs or not all(isinstance(x, str) for x in segs):
            raise ValueError(f"'segments' must be a non-empty list of strings (got {str(segs)[:60]!r})")
    elif isinstance(data.get("text"), str):
        segs = [data["text"]]
    else:
        raise ValueError("job data needs 'segments' (a list of strings) or 'text' (a string)")
    if len(segs) > max_segments:
        raise ValueError(f"{len(segs)} segments; the limit is {max_segments} (MT_MAX_SEGMENTS)")
    empty = [i for i, x in enumerate(segs) if not x.strip()]
    if empty:
        raise ValueError(f"segment(s) {empty[:5]} are empty")
    return segs


class MtEngine(Engine):
    service = "mt"

    def __init__(self, config: MtConfig) -> None:
        self.config = config
        self.max_batch = config.batch_size
        self.batch_wait_s = config.batch_wait_ms / 1000
        self.translator = MarianTranslator(config)

    def load(self) -> None:
        self.translator.load()

    async def prepare(self, job: Job) -> MtInput:
        data = job.data if isinstance(job.data, dict) else {}
        c = self.config
        target = data.get("target_language")
        if target not in c.target_languages:
            raise UnrecoverableError(f"target_language {repr(target)[:40]} is not one this model translates "
                                     f"to: {list(c.target_languages)}")
        source = data.get("source_language")
        if source is not None and source != c.source_language:
            raise UnrecoverableError(f"source_language {repr(source)[:40]}: this model translates from "
                                     f"{c.source_language!r}")
        media = data.get("media_seconds", 0.0)
        if not isinstance(media, int | float) or isinstance(media, bool) or media < 0:
            raise UnrecoverableError(f"media_seconds must be a number >= 0 (got {str(media)[:20]!r})")
        try:
            tokens = self.translator.tokenize(segments_of(data, c.max_segments), target)
        except ValueError as exc:  # TooLong too
            raise UnrecoverableError(str(exc)) from exc
        return MtInput(tokens=tokens, target=target, media_seconds=float(media))

    def run_batch(self, items: list[MtInput]) -> list[Any]:
        try:
            return list(self.translator.translate([i.tokens for i in items]))
        except Exception:
            if len(items) == 1:
                raise
        outputs: list[Any] = []  # isolate the job that fails its batch-mates
        for item in items:
            try:
                outputs.extend(self.translator.translate([item.tokens]))
            except Exception as exc:
                outputs.append(exc)
        return outputs

    async def finish(self, job: Job, output: Translation) -> dict[str, Any]:
        return {"segments": output.segments, "source_language": self.config.source_language,
                "target_language": job.data["target_language"], "tokens_in": output.tokens_in,
                "tokens_out": output.tokens_out, "model": self.describe()["model"]}

    def audio_seconds(self, item: MtInput, output: Translation) -> float:
        return item.media_seconds

    def describe(self) -> dict[str, str]:
        # A model built by workers/mt/random_model.py says so in every result and in model_worker_info.
        random = (self.config.model / "RANDOM_WEIGHTS.txt").is_file()
        return {"model": self.config.model.name + (" (random weights)" if random else ""), "device": self.config.device,
                "compute_type": self.config.compute_type}
