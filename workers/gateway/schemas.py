"""Request and response bodies of the gateway API (they also make up the served OpenAPI spec)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictStr


class TtsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: StrictStr
    voice: StrictStr = "default"


class MtRequest(BaseModel):
    """Text to translate: ``segments`` (the STT segments of a dubbing job, say) or one ``text``."""

    model_config = ConfigDict(extra="forbid")

    segments: list[StrictStr] | None = None
    text: StrictStr | None = None
    target_language: StrictStr
    source_language: StrictStr | None = None


class JobAccepted(BaseModel):
    id: str
    service: str
    status: str
    status_url: str


class JobStatus(BaseModel):
    id: str
    service: str
    status: str
    result: Any = None
    error: str | None = None
    attempts_made: int
    timings: dict[str, float | int | None]
    audio_url: str | None = None
    video_url: str | None = None
    # A dubbing job's stages (stt, mt, tts, lipsync): status, job count, start, finish, errors.
    stages: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


STT_UPLOAD_SCHEMA: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary",
                             "description": "WAV, FLAC, MP3 or OGG audio (detected from content)"},
                    "language": {"type": "string", "description": "ISO 639-1 code; detected if omitted"},
                },
            }
        }
    },
}

LIPSYNC_UPLOAD_SCHEMA: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["video", "audio"],
                "properties": {
                    "video": {"type": "string", "format": "binary", "description": "MP4, MOV, MKV or WebM"},
                    "audio": {"type": "string", "format": "binary",
                              "description": "the dubbed audio: WAV, FLAC, MP3 or OGG"},
                    "face_box": {"type": "string", "description": "x0,y0,x1,y1 fractions of the frame"},
                },
            }
        }
    },
}

DUBBING_UPLOAD_SCHEMA: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "target_language"],
                "properties": {
                    "file": {"type": "string", "format": "binary",
                             "description": "a video with an audio track (MP4, MKV, WebM: lip-synced) or audio "
                                            "(WAV, FLAC, MP3, OGG)"},
                    "target_language": {"type": "string", "description": "one of the mt service's languages"},
                    "voice": {"type": "string", "description": "a TTS voice (default: default)"},
                },
            }
        }
    },
}

XTTS_UPLOAD_SCHEMA: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["text"],
                "properties": {
                    "text": {"type": "string", "description": "the text to speak"},
                    "language": {"type": "string",
                                 "description": "one of the xtts model's languages (XTTS_LANGUAGES); default: the "
                                                "worker's XTTS_LANGUAGE"},
                    "reference": {"type": "string", "format": "binary",
                                  "description": "the voice to clone: WAV, FLAC, MP3 or OGG speech of one speaker, "
                                                 "at least 0.33 s (3 to 10 s is best); default: the workers' "
                                                 "XTTS_SPEAKER_WAV"},
                },
            }
        }
    },
}

TTS_BODY_SCHEMA: dict[str, Any] = {
    "required": True,
    "content": {"application/json": {"schema": TtsRequest.model_json_schema()}},
}

MT_BODY_SCHEMA: dict[str, Any] = {
    "required": True,
    "content": {"application/json": {"schema": MtRequest.model_json_schema()}},
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "missing or invalid API key",
        404: "unknown service or job",
        413: "upload or audio too large",
        415: "unsupported audio format",
        422: "invalid request",
        429: "rate limited (see Retry-After)",
    }.items()
}
