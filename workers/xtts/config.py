"""XTTS worker settings: the model directory (its config.json must say ``"model": "xtts"``), device, default
language and default reference voice, and the text limit. No torch here: the gateway imports the constants.

    XTTS_MODEL_DIR     required: config.json ("model": "xtts", "languages": [...]), model.pth, vocab.json
    XTTS_DEVICE        cpu | cuda (default cpu)
    XTTS_LANGUAGE      default language of a job that names none (default en, else the model's first language)
    XTTS_SPEAKER_WAV   optional default reference voice (audio file); without it every job must carry one
    XTTS_MAX_TEXT_CHARS  characters per job (default 1000)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from workers.core.env import ConfigError, Settings

# The languages of every released XTTS v2 model (Coqui's XttsConfig.languages): the gateway's default list.
XTTS_V2_LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh-cn", "hu", "ko",
                     "ja", "hi")
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[a-z]{2,4})?$")
# XTTS conditions on 22.05 kHz audio (Xtts.get_conditioning_latents' load_sr) and ignores reference chunks shorter
# than 0.33 s (Xtts.get_gpt_cond_latents); 3 to 10 s of one speaker is what it is made for.
REFERENCE_RATE = 22050
MIN_REFERENCE_SECONDS = 0.33
MODEL_HELP = ("an XTTS model directory: config.json saying \"model\": \"xtts\" (with its \"languages\"), "
              "model.pth and vocab.json")


def parse_language_list(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of XTTS language codes ('en', 'zh-cn'): the gateway's copy of the model's list."""
    langs = tuple(x.strip() for x in raw.split(",") if x.strip())
    if not langs or any(not LANGUAGE_CODE.match(x) for x in langs):
        raise ConfigError(name, raw, "a comma-separated list of language codes such as 'en,de,zh-cn'")
    return langs


def _model_config(raw: str) -> tuple[Path, dict[str, object]]:
    if not raw:
        raise ConfigError("XTTS_MODEL_DIR", raw, MODEL_HELP + " (required)")
    model_dir = Path(raw)
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        why = "no such directory" if not model_dir.is_dir() else "it has no config.json"
        raise ConfigError("XTTS_MODEL_DIR", raw, f"{MODEL_HELP}; {why}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError("XTTS_MODEL_DIR", raw, f"{MODEL_HELP}; its config.json is not JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("model") != "xtts":
        got = config.get("model") if isinstance(config, dict) else None
        raise ConfigError("XTTS_MODEL_DIR", raw, f"{MODEL_HELP}; its config.json says \"model\": {json.dumps(got)} "
                          "(other Coqui models run in the tts service with TTS_BACKEND=coqui)")
    missing = [] if (model_dir / "model.pth").is_file() else ["model.pth"]
    tokenizer_file = (config.get("model_args") or {}).get("tokenizer_file") if isinstance(
        config.get("model_args"), dict) else None
    if not (model_dir / "vocab.json").is_file() and not (tokenizer_file and Path(str(tokenizer_file)).is_file()):
        missing.append("vocab.json")
    if missing:
        raise ConfigError("XTTS_MODEL_DIR", raw, f"{MODEL_HELP}; missing {', '.join(missing)}")
    return model_dir, config


@dataclass(frozen=True)
class XttsConfig:
    model_dir: Path
    device: str
    language: str
    languages: tuple[str, ...]  # the model's (config.json "languages"): a job's language must be one of them
    speaker_wav: Path | None
    max_text_chars: int

    @classmethod
    def from_settings(cls, s: Settings) -> XttsConfig:
        raw = s.text("XTTS_MODEL_DIR", "")
        model_dir, model_config = _model_config(raw)
        langs = model_config.get("languages")
        if not isinstance(langs, list) or not langs or not all(isinstance(x, str) for x in langs):
            raise ConfigError("XTTS_MODEL_DIR", raw, f"{MODEL_HELP}; its config.json has no \"languages\" list")
        languages = tuple(langs)
        language = s.text("XTTS_LANGUAGE", "en" if "en" in languages else languages[0])
        if language not in languages:
            raise ConfigError("XTTS_LANGUAGE", language, f"one of the model's languages: {', '.join(languages)}")
        speaker_wav = s.optional("XTTS_SPEAKER_WAV")
        if speaker_wav is not None:
            from workers.xtts.audio import BadReference, decode_reference

            path = Path(speaker_wav)
            if not path.is_file():
                raise ConfigError("XTTS_SPEAKER_WAV", speaker_wav, "an existing audio file with the default reference "
                                  "voice (WAV, FLAC, MP3, OGG; 3 to 10 s of one speaker), or unset")
            try:
                decode_reference(path.read_bytes(), f"XTTS_SPEAKER_WAV {speaker_wav!r}")
            except BadReference as exc:
                raise ConfigError("XTTS_SPEAKER_WAV", speaker_wav, f"a readable reference voice: {exc}") from None
        return cls(
            model_dir=model_dir,
            device=s.choice("XTTS_DEVICE", "cpu", ("cpu", "cuda")),
            language=language,
            languages=languages,
            speaker_wav=Path(speaker_wav) if speaker_wav else None,
            max_text_chars=s.integer("XTTS_MAX_TEXT_CHARS", 1000, 1, 100_000),
        )
