"""Bad requests to the gateway, each with the status, error code and words its message must contain.

Used by test_gateway_api.py (TestClient) and bench/error_table.py (real socket, for workers/README.md).
The gateway under test runs with the limits in LIMITS.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf

LIMITS = {
    "GATEWAY_MAX_UPLOAD_BYTES": "300000",
    "GATEWAY_MAX_AUDIO_SECONDS": "5",
    "GATEWAY_MAX_TEXT_CHARS": "200",
    "GATEWAY_RATE_LIMIT_PER_S": "1000",
    "GATEWAY_RATE_LIMIT_BURST": "1000",
    "GATEWAY_MAX_SEGMENTS": "3",
    "QUEUES": "stt,tts,mt",
    "MT_TARGET_LANGUAGES": "de,fr",
}


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt)
    return buffer.getvalue()


@dataclass(frozen=True)
class Audio:
    """Test audio derived from one synthesized sentence (about 2.5 s at 22.05 kHz)."""

    samples: np.ndarray
    rate: int

    @property
    def wav(self) -> bytes:
        return encode(self.samples, self.rate, "WAV")

    @property
    def flac(self) -> bytes:
        return encode(self.samples, self.rate, "FLAC")


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int
    code: str
    mentions: tuple[str, ...]
    auth: str = "good"  # good | none | bad | basic
    request: Callable[[Audio], dict[str, Any]] = field(default=lambda audio: {})


CASES = [
    Case("no API key", "POST", "/v1/jobs/tts", 401, "missing_api_key", ("Authorization", "X-API-Key"),
         auth="none", request=lambda a: {"json": {"text": "hi"}}),
    Case("wrong API key", "POST", "/v1/jobs/tts", 401, "invalid_api_key", ("'mgw_wr'",),
         auth="bad", request=lambda a: {"json": {"text": "hi"}}),
    Case("Authorization scheme not Bearer", "POST", "/v1/jobs/tts", 401, "invalid_authorization_header",
         ("'Basic'", "Bearer"), auth="basic", request=lambda a: {"json": {"text": "hi"}}),
    Case("unknown service", "POST", "/v1/jobs/ocr", 404, "unknown_service", ("'ocr'", "stt", "tts"),
         request=lambda a: {"json": {"text": "hi"}}),
    Case("text of the wrong type", "POST", "/v1/jobs/tts", 422, "invalid_request", ("'text'", "123"),
         request=lambda a: {"json": {"text": 123}}),
    Case("missing text", "POST", "/v1/jobs/tts", 422, "invalid_request", ("'text'", "required"),
         request=lambda a: {"json": {"voice": "default"}}),
    Case("unknown field", "POST", "/v1/jobs/tts", 422, "invalid_request", ("'speed'", "not allowed"),
         request=lambda a: {"json": {"text": "hi", "speed": 2}}),
    Case("body not JSON", "POST", "/v1/jobs/tts", 422, "invalid_request", ("JSON",),
         request=lambda a: {"content": b"text=hi", "headers": {"content-type": "application/json"}}),
    Case("empty text", "POST", "/v1/jobs/tts", 422, "empty_text", ("'text'", "empty", "200"),
         request=lambda a: {"json": {"text": "   "}}),
    Case("text over the length limit", "POST", "/v1/jobs/tts", 422, "text_too_long", ("201", "200"),
         request=lambda a: {"json": {"text": "a" * 201}}),
    Case("unknown voice", "POST", "/v1/jobs/tts", 422, "unknown_voice", ("'nobody'", "default"),
         request=lambda a: {"json": {"text": "hi", "voice": "nobody"}}),
    Case("corrupt audio (random bytes named .wav)", "POST", "/v1/jobs/stt", 400, "corrupt_audio",
         ("'noise.wav'", "WAV, FLAC, MP3, OGG"),
         request=lambda a: {"files": {"file": ("noise.wav", os.urandom(4000), "audio/wav")}}),
    Case("truncated FLAC", "POST", "/v1/jobs/stt", 400, "corrupt_audio", ("'cut.flac'", "FLAC"),
         request=lambda a: {"files": {"file": ("cut.flac", a.flac[:200], "audio/flac")}}),
    Case("unsupported format (AIFF)", "POST", "/v1/jobs/stt", 415, "unsupported_audio_format",
         ("'aiff'", "WAV, FLAC, MP3, OGG"),
         request=lambda a: {"files": {"file": ("voice.wav", encode(a.samples, a.rate, "AIFF"),
                                               "audio/wav")}}),
    Case("upload over the size limit", "POST", "/v1/jobs/stt", 413, "upload_too_large", ("300000",),
         request=lambda a: {"files": {"file": ("big.wav", encode(np.zeros(200_000, np.float32), 16000, "WAV"),
                                               "audio/wav")}}),
    Case("audio over the duration limit", "POST", "/v1/jobs/stt", 413, "audio_too_long",
         ("'long.flac'", "5 s"),
         request=lambda a: {"files": {"file": ("long.flac", encode(np.tile(a.samples, 3), a.rate, "FLAC"),
                                               "audio/flac")}}),
    Case("no file field", "POST", "/v1/jobs/stt", 422, "invalid_request", ("'file'", "required"),
         request=lambda a: {"data": {"language": "en"}, "files": {"other": ("x", b"x")}}),
    Case("file sent as a text field", "POST", "/v1/jobs/stt", 422, "invalid_request",
         ("'file'", "text value"),
         request=lambda a: {"data": {"file": "hello"}, "files": {"other": ("x", b"x")}}),
    Case("not multipart", "POST", "/v1/jobs/stt", 415, "unsupported_media_type", ("application/json", "file"),
         request=lambda a: {"json": {"file": "x"}}),
    Case("unknown language", "POST", "/v1/jobs/stt", 422, "invalid_request", ("'klingon'", "language"),
         request=lambda a: {"data": {"language": "klingon"},
                            "files": {"file": ("s.wav", a.wav, "audio/wav")}}),
    Case("mt: unknown target language", "POST", "/v1/jobs/mt", 422, "unknown_language", ("'xx'", "de", "fr"),
         request=lambda a: {"json": {"text": "hello", "target_language": "xx"}}),
    Case("mt: no target language", "POST", "/v1/jobs/mt", 422, "invalid_request", ("'target_language'", "required"),
         request=lambda a: {"json": {"text": "hello"}}),
    Case("mt: both text and segments", "POST", "/v1/jobs/mt", 422, "invalid_request", ("exactly one", "'segments'"),
         request=lambda a: {"json": {"text": "hello", "segments": ["hi"], "target_language": "de"}}),
    Case("mt: segments not strings", "POST", "/v1/jobs/mt", 422, "invalid_request", ("'segments.1'", "string"),
         request=lambda a: {"json": {"segments": ["hi", 7], "target_language": "de"}}),
    Case("mt: too many segments", "POST", "/v1/jobs/mt", 422, "invalid_request", ("4 entries", "1 to 3"),
         request=lambda a: {"json": {"segments": ["a", "b", "c", "d"], "target_language": "de"}}),
    Case("mt: an empty segment", "POST", "/v1/jobs/mt", 422, "empty_text", ("[1]", "empty"),
         request=lambda a: {"json": {"segments": ["a", " "], "target_language": "de"}}),
    Case("mt: a segment over the length limit", "POST", "/v1/jobs/mt", 422, "text_too_long", ("[0]", "200"),
         request=lambda a: {"json": {"segments": ["a" * 201], "target_language": "de"}}),
    Case("unknown job id", "GET", "/v1/jobs/stt-00000000000000000000000000000000", 404, "job_not_found",
         ("'stt-00000000000000000000000000000000'",)),
]
