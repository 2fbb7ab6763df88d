"""Test media made with PyAV, independently of the code under test: a moving gradient (every frame differs) and an
optional mono audio track, muxed as MP4 (H.264 + AAC) or WebM (VP8 + Vorbis). Used by test_lipsync and
test_dubbing."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np


def tone(seconds: float, rate: int = 16000, freq: float = 220.0) -> np.ndarray:
    return (0.2 * np.sin(np.arange(int(rate * seconds)) * 2 * np.pi * freq / rate)).astype(np.float32)


def mux(frames: int, width: int = 160, height: int = 120, fps: int = 25, audio: np.ndarray | None = None,
        rate: int = 16000, fmt: str = "mp4") -> bytes:
    """``frames`` gradient frames (0: no video stream) and ``audio`` (mono float32 at ``rate``; None: no track)."""
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as c:
        v = None
        if frames:
            v = c.add_stream("libx264" if fmt == "mp4" else "libvpx", rate=Fraction(fps))
            v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = None if audio is None else c.add_stream("aac" if fmt == "mp4" else "libvorbis", rate=rate, layout="mono")
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(frames):
            img = np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, np.full_like(xx, 128)], -1).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            c.mux(v.encode(f))
        if v is not None:
            c.mux(v.encode(None))
        if a is not None:
            for k in range(0, audio.size, 1024):
                af = av.AudioFrame.from_ndarray(audio[None, k:k + 1024].copy(), format="flt", layout="mono")
                af.sample_rate, af.pts = rate, k
                c.mux(a.encode(af))
            c.mux(a.encode(None))
    return out.getvalue()
