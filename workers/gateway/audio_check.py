"""Check an upload is audio in an accepted container by decoding it; the file name is not trusted.

FFmpeg (through PyAV) detects the container from the bytes. Decoding every frame finds truncated or
damaged files and gives the real duration, which the duration limit needs.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import av.logging

from workers.gateway.errors import ApiError

# FFmpeg demuxer name -> the name clients know.
ACCEPTED_FORMATS = {"wav": "WAV", "flac": "FLAC", "mp3": "MP3", "ogg": "OGG"}
ALLOWED_TEXT = "WAV, FLAC, MP3, OGG"

# FFmpeg prints decoder complaints on stderr; the result of the check is what matters, not the noise.
av.logging.set_level(av.logging.PANIC)


@dataclass(frozen=True)
class AudioInfo:
    format: str
    duration_s: float
    sample_rate: int
    channels: int


def check_audio(data: bytes, filename: str, max_seconds: float) -> AudioInfo:
    if not data:
        raise ApiError(400, "empty_audio", f"uploaded file {filename!r} is empty; send {ALLOWED_TEXT} audio")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError) as exc:
        raise ApiError(400, "corrupt_audio", f"uploaded file {filename!r} could not be read as audio "
                       f"({exc.__class__.__name__}); send {ALLOWED_TEXT} audio") from None
    with container:
        detected = container.format.name
        if detected not in ACCEPTED_FORMATS:
            raise ApiError(415, "unsupported_audio_format", f"uploaded file {filename!r} is {detected!r} "
                           f"(detected from its content); allowed formats: {ALLOWED_TEXT}")
        if not container.streams.audio:
            raise ApiError(415, "unsupported_audio_format",
                           f"uploaded file {filename!r} ({detected}) has no audio stream")
        stream = container.streams.audio[0]
        samples = 0
        rate = stream.rate or 0
        try:
            for frame in container.decode(stream):
                samples += frame.samples
                rate = frame.sample_rate or rate
                if rate and samples / rate > max_seconds:
                    break
        except (av.error.FFmpegError, ValueError) as exc:
            raise ApiError(400, "corrupt_audio", f"uploaded file {filename!r} looks like "
                           f"{ACCEPTED_FORMATS[detected]} but does not decode ({exc.__class__.__name__}: "
                           f"{getattr(exc, 'strerror', None) or exc})") from None
        if samples == 0 or not rate:
            raise ApiError(400, "corrupt_audio", f"uploaded file {filename!r} ({ACCEPTED_FORMATS[detected]}) "
                           "contains no decodable audio samples")
        duration = samples / rate
        if duration > max_seconds:
            raise ApiError(413, "audio_too_long", f"uploaded audio {filename!r} is longer than the limit of "
                           f"{max_seconds:g} s")
        return AudioInfo(format=ACCEPTED_FORMATS[detected], duration_s=round(duration, 3),
                         sample_rate=rate, channels=stream.channels or 0)
