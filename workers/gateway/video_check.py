"""Check an upload is a video in an accepted container, with a video stream that decodes, before it is queued.

FFmpeg (through PyAV) detects the container from the bytes; the file name is not trusted. Only the first frame is
decoded here (a video is large); the duration limit reads the container's duration. A file damaged further in
fails its lipsync job with the frame it stopped at.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av

from workers.gateway.errors import ApiError

# FFmpeg demuxer names (comma lists, as FFmpeg reports them) -> the name clients know.
ACCEPTED = {"mov,mp4,m4a,3gp,3g2,mj2": "MP4", "matroska,webm": "MKV/WebM"}
ALLOWED_TEXT = "MP4 (or MOV), MKV, WebM"


@dataclass(frozen=True)
class VideoInfo:
    format: str
    duration_s: float
    width: int
    height: int
    has_audio: bool


def check_video(data: bytes, filename: str, max_seconds: float) -> VideoInfo:
    if not data:
        raise ApiError(400, "empty_video", f"uploaded file {filename!r} is empty; send {ALLOWED_TEXT} video")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError) as exc:
        raise ApiError(400, "corrupt_video", f"uploaded file {filename!r} could not be read as a media container "
                       f"({exc.__class__.__name__}); send {ALLOWED_TEXT} video") from None
    with container:
        detected = container.format.name
        if detected not in ACCEPTED:
            raise ApiError(415, "unsupported_video_format", f"uploaded file {filename!r} is {detected!r} (detected "
                           f"from its content); allowed formats: {ALLOWED_TEXT}")
        if not container.streams.video:
            raise ApiError(415, "no_video_stream", f"uploaded file {filename!r} ({ACCEPTED[detected]}) has no video "
                           "stream")
        stream = container.streams.video[0]
        duration = (container.duration or 0) / av.time_base
        if not duration and stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        if duration > max_seconds:
            raise ApiError(413, "video_too_long", f"uploaded video {filename!r} is {duration:.1f} s, longer than "
                           f"the limit of {max_seconds:g} s")
        try:
            first = next(container.decode(stream), None)
        except (av.error.FFmpegError, ValueError) as exc:
            raise ApiError(400, "corrupt_video", f"uploaded file {filename!r} looks like {ACCEPTED[detected]} but "
                           f"its video does not decode ({exc.__class__.__name__})") from None
        if first is None:
            raise ApiError(400, "corrupt_video", f"uploaded file {filename!r} has a video stream with no frame")
        return VideoInfo(ACCEPTED[detected], round(duration, 3), first.width, first.height,
                         bool(container.streams.audio))


def is_video(data: bytes) -> bool:
    """Whether the bytes are a container with a video stream (an audio file is not; unreadable bytes are not)."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            return bool(container.streams.video)
    except (av.error.FFmpegError, ValueError, OSError):
        return False
