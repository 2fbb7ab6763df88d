"""Video and audio in and out through PyAV (FFmpeg): decode a video's frames and an audio track, compute Wav2Lip's
mel spectrogram, encode the result as MP4 (H.264 + AAC) whose duration is the audio's.

Every decode failure is a ``MediaError`` naming what is wrong (a corrupt container, no video stream, no audio
track, too long), raised before any model work.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

SAMPLE_RATE = 16000
# Wav2Lip's audio front end (its hparams.py): 16 kHz, n_fft 800, hop 200 (80 mel frames per second), 80 mel bands
# from 55 to 7600 Hz, pre-emphasis 0.97, dB scaled and normalised to [-4, 4].
N_FFT, HOP, MEL_BINS, FMIN, FMAX = 800, 200, 80, 55.0, 7600.0
MEL_FPS = SAMPLE_RATE / HOP


class MediaError(ValueError):
    """Input media this service cannot use; the message names the problem and what is accepted."""


@dataclass
class Video:
    frames: list[np.ndarray]  # H x W x 3 uint8 (RGB)
    fps: float
    width: int
    height: int


def _open(data: bytes, what: str):
    try:
        return av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise MediaError(f"{what} is not a readable media container ({exc}); accepted: MP4, MOV, MKV, WebM "
                         "(video) and WAV, FLAC, MP3, OGG, M4A (audio)") from exc


def decode_video(data: bytes, max_seconds: float) -> Video:
    with _open(data, "the video") as container:
        streams = container.streams.video
        if not streams:
            raise MediaError("the video has no video stream (audio only?): lipsync needs a video with a face")
        stream = streams[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if not 1 <= fps <= 120:
            raise MediaError(f"the video's frame rate {fps:g} is not usable; allowed: 1 to 120 frames/s")
        frames: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) / fps > max_seconds:
                    raise MediaError(f"the video is longer than {max_seconds:g} s (LIPSYNC_MAX_VIDEO_SECONDS)")
        except av.error.FFmpegError as exc:
            raise MediaError(f"the video does not decode after {len(frames)} frame(s): {exc}") from exc
        if not frames:
            raise MediaError("the video has a video stream but no decodable frame")
        h, w = frames[0].shape[:2]
        return Video(frames, fps, w, h)


def decode_audio(data: bytes, max_seconds: float) -> np.ndarray:
    """The first audio track as 16 kHz mono float32: faster-whisper's decode_audio (the STT worker's, PyAV), after
    a check that there is an audio track to decode."""
    from faster_whisper import decode_audio as whisper_decode

    with _open(data, "the audio") as container:
        if not container.streams.audio:
            raise MediaError("the audio has no audio track")
    try:
        audio = whisper_decode(io.BytesIO(data), sampling_rate=SAMPLE_RATE).astype(np.float32)
    except av.error.FFmpegError as exc:
        raise MediaError(f"the audio does not decode: {exc}") from exc
    if audio.size == 0:
        raise MediaError("the audio track is empty")
    if audio.size / SAMPLE_RATE > max_seconds:
        raise MediaError(f"the audio is {audio.size / SAMPLE_RATE:.1f} s, longer than {max_seconds:g} s "
                         "(LIPSYNC_MAX_VIDEO_SECONDS)")
    return audio


def _mel_filters() -> np.ndarray:
    """Slaney-style triangular mel filters (MEL_BINS x N_FFT/2+1), area-normalised, as librosa builds them."""
    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        lin = f / (200.0 / 3)
        log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log, lin)

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        lin = m * (200.0 / 3)
        log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
        return np.where(m >= 15.0, log, lin)

    freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(FMIN), hz_to_mel(FMAX), MEL_BINS + 2))
    fb = np.zeros((MEL_BINS, freqs.size))
    for i in range(MEL_BINS):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        fb[i] = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
        fb[i] *= 2.0 / (hi - lo)
    return fb


_FILTERS = _mel_filters()


def mel_spectrogram(audio: np.ndarray) -> np.ndarray:
    """Wav2Lip's normalised mel spectrogram: MEL_BINS x frames (80 per second), values in [-4, 4]."""
    x = np.append(audio[:1], audio[1:] - 0.97 * audio[:-1])  # pre-emphasis
    pad = N_FFT // 2
    x = np.pad(x, (pad, pad), mode="constant")  # librosa.stft(center=True), whose pad_mode is "constant"
    n = 1 + (x.size - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(N_FFT + 1)[:-1], axis=1)).T
    db = 20 * np.log10(np.maximum(1e-5, _FILTERS @ spec)) - 20.0
    return np.clip(8.0 * ((db + 100.0) / 100.0) - 4.0, -4.0, 4.0).astype(np.float32)


def encode_mp4(frames: list[np.ndarray], fps: float, audio: np.ndarray) -> bytes:
    """H.264 (yuv420p) at ``fps`` and AAC of ``audio`` (16 kHz mono) in an MP4."""
    out = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1001)
    h, w = frames[0].shape[:2]
    with av.open(out, mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        video.options = {"preset": "veryfast", "crf": "20"}
        sound = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: video.height, : video.width]), format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        step = 1024
        for start in range(0, audio.size, step):
            chunk = audio[start:start + step].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="flt", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            container.mux(sound.encode(frame))
        container.mux(sound.encode(None))
    return out.getvalue()


def durations(data: bytes) -> dict[str, float]:
    """Duration in seconds of each stream of an MP4 (``video``, ``audio``) and its frame count (``frames``)."""
    with _open(data, "the output") as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        frames = sum(1 for _ in container.decode(v))
        return {"video": float(v.duration * v.time_base) if v.duration else frames / float(v.average_rate),
                "audio": float(a.duration * a.time_base) if a.duration else 0.0, "frames": frames,
                "fps": float(v.average_rate)}
