"""Decode a reference voice (an uploaded file, or XTTS_SPEAKER_WAV) to what XTTS conditions on: 22.05 kHz mono float32
in [-1, 1]. PyAV through faster-whisper's decode_audio (the STT worker's), not torchaudio.load: torchaudio 2.9 and
later load through torchcodec, whose FFmpeg and CUDA libraries a CPU machine may lack."""

from __future__ import annotations

import io

import av
import numpy as np

from workers.xtts.config import MIN_REFERENCE_SECONDS, REFERENCE_RATE

ACCEPTED = "WAV, FLAC, MP3 or OGG speech"


class BadReference(ValueError):
    """A reference voice XTTS cannot use; the message names it and says what is accepted."""


def decode_reference(data: bytes, what: str) -> np.ndarray:
    from faster_whisper import decode_audio

    if not data:
        raise BadReference(f"{what} is empty; send {ACCEPTED}, at least {MIN_REFERENCE_SECONDS} s (3 to 10 s is best)")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            has_audio = bool(container.streams.audio)
        if has_audio:
            audio = decode_audio(io.BytesIO(data), sampling_rate=REFERENCE_RATE)
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise BadReference(f"{what} could not be read as audio ({type(exc).__name__}: {exc}); "
                           f"send {ACCEPTED}") from None
    if not has_audio:
        raise BadReference(f"{what} has no audio stream; send {ACCEPTED}")
    seconds = audio.size / REFERENCE_RATE
    if seconds < MIN_REFERENCE_SECONDS:
        raise BadReference(f"{what} is {seconds:.2f} s of audio; XTTS needs at least {MIN_REFERENCE_SECONDS} s of the "
                           "speaker (3 to 10 s is best)")
    return np.clip(audio.astype(np.float32), -1.0, 1.0)
