"""MT worker settings: which Marian model (a CTranslate2 directory), which languages, device and batching.

The model directory is what CTranslate2's converter writes for a Marian model, with the tokenizer files copied
beside it (README: "The mt service"):

    ct2-transformers-converter --model Helsinki-NLP/opus-mt-en-de --output_dir /models/mt \\
        --copy_files source.spm target.spm tokenizer_config.json

Languages: MT_SOURCE_LANGUAGE and MT_TARGET_LANGUAGES, else the ``source_lang``/``target_lang`` of the
tokenizer_config.json that Marian checkpoints carry. A model with several target languages (opus-mt-en-ROMANCE)
is told the target by a ``>>xx<<`` token in front of the source, which must be in its vocabulary.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from workers.core.env import ConfigError, Settings

COMPUTE_TYPES = ("default", "auto", "int8", "int8_float16", "int8_float32", "int8_bfloat16", "int16",
                 "float16", "bfloat16", "float32")
MODEL_FILES = ("model.bin", "source.spm", "target.spm")
# ISO 639-1/-3 codes and Marian's script-qualified ones (zh_Hant, pt_BR, sr_Cyrl).
LANGUAGE = re.compile(r"^[a-z]{2,3}(_[A-Za-z]{2,4})?$")


def _check_model(value: str) -> Path:
    path = Path(value)
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if not value or not path.is_dir() or missing:
        why = "no such directory" if not path.is_dir() else "missing " + ", ".join(missing)
        raise ConfigError("MT_MODEL", value, "a CTranslate2 Marian model directory with model.bin, source.spm "
                          f"and target.spm (ct2-transformers-converter --copy_files source.spm target.spm); {why}")
    return path


def parse_languages(name: str, raw: str, allow_empty: bool = False) -> tuple[str, ...]:
    """A comma-separated list of language codes (the worker's MT_TARGET_LANGUAGES, and the gateway's copy of it,
    which may be empty: any code then)."""
    langs = tuple(x.strip() for x in raw.split(",") if x.strip())
    bad = [x for x in langs if not LANGUAGE.match(x)]
    if (not langs and not allow_empty) or bad:
        raise ConfigError(name, raw, "a comma-separated list of language codes such as 'de' or 'de,fr,pt_BR'")
    return langs


def _tokenizer_config(model: Path) -> dict[str, object]:
    f = model / "tokenizer_config.json"
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("MT_MODEL", str(model), f"a model whose tokenizer_config.json is JSON ({exc})") from exc
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class MtConfig:
    model: Path
    source_language: str
    target_languages: tuple[str, ...]
    device: str
    compute_type: str
    batch_size: int  # jobs per model call
    batch_wait_ms: int
    max_segments: int  # segments per job
    max_input_tokens: int  # per segment, after tokenization
    max_decoding_length: int
    beam_size: int
    cpu_threads: int

    @classmethod
    def from_settings(cls, s: Settings) -> MtConfig:
        model = _check_model(s.text("MT_MODEL", ""))
        tok = _tokenizer_config(model)
        source = s.text("MT_SOURCE_LANGUAGE", str(tok.get("source_lang") or ""))
        if not LANGUAGE.match(source):
            raise ConfigError("MT_SOURCE_LANGUAGE", source, "a language code such as 'en' (the model's "
                              "tokenizer_config.json names none)")
        targets = parse_languages("MT_TARGET_LANGUAGES",
                                  s.text("MT_TARGET_LANGUAGES", str(tok.get("target_lang") or "")))
        device = s.choice("MT_DEVICE", "cpu", ("cpu", "cuda", "auto"))
        return cls(
            model=model,
            source_language=source,
            target_languages=targets,
            device=device,
            compute_type=s.choice("MT_COMPUTE_TYPE", "int8" if device == "cpu" else "float16", COMPUTE_TYPES),
            batch_size=s.integer("MT_BATCH_SIZE", 8, 1, 256),
            batch_wait_ms=s.integer("MT_BATCH_WAIT_MS", 10, 0, 10_000),
            max_segments=s.integer("MT_MAX_SEGMENTS", 256, 1, 100_000),
            # Marian's position table holds 512; the source's </s> (and a >>xx<< token) count.
            max_input_tokens=s.integer("MT_MAX_INPUT_TOKENS", 510, 1, 100_000),
            max_decoding_length=s.integer("MT_MAX_DECODING_LENGTH", 256, 1, 100_000),
            beam_size=s.integer("MT_BEAM_SIZE", 1, 1, 16),
            cpu_threads=s.integer("MT_CPU_THREADS", 0, 0, 256),
        )
