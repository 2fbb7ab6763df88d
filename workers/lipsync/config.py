"""Lip-sync worker settings: the model directory, the device, the face region, batching and input limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workers.core.env import ConfigError, Settings

MODEL_FILES = ("config.json", "model.pt")


def parse_box(name: str, raw: object) -> tuple[float, float, float, float]:
    """``x0,y0,x1,y1`` as fractions of the frame (0 to 1, x0 < x1, y0 < y1), from a string or a list."""
    parts = raw.split(",") if isinstance(raw, str) else raw
    try:
        box = tuple(float(p) for p in parts)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        box = ()
    if len(box) != 4 or not all(0 <= v <= 1 for v in box) or not (box[0] < box[2] and box[1] < box[3]):
        raise ConfigError(name, str(raw)[:60], "x0,y0,x1,y1: fractions of the frame from 0 to 1 with x0 < x1 and "
                          "y0 < y1, such as 0.3,0.15,0.7,0.75")
    return box  # type: ignore[return-value]


@dataclass(frozen=True)
class LipsyncConfig:
    model: Path
    device: str
    face_box: tuple[float, float, float, float]
    batch_frames: int
    max_video_seconds: float
    cpu_threads: int

    @classmethod
    def from_settings(cls, s: Settings) -> LipsyncConfig:
        raw = s.text("LIPSYNC_MODEL", "")
        model = Path(raw)
        missing = [f for f in MODEL_FILES if not (model / f).is_file()]
        if not raw or missing:
            raise ConfigError("LIPSYNC_MODEL", raw, "a model directory with config.json and model.pt "
                              f"(workers/lipsync/model.py); missing {', '.join(missing)}")
        return cls(
            model=model,
            device=s.choice("LIPSYNC_DEVICE", "cpu", ("cpu", "cuda")),
            # No face detector runs here (a detector's weights cannot be fetched): the face is where this box says,
            # or where the job's face_box says.
            face_box=parse_box("LIPSYNC_FACE_BOX", s.text("LIPSYNC_FACE_BOX", "0.3,0.15,0.7,0.75")),
            batch_frames=s.integer("LIPSYNC_BATCH_FRAMES", 16, 1, 1024),
            max_video_seconds=s.number("LIPSYNC_MAX_VIDEO_SECONDS", 120.0, 1.0, 3600.0),
            cpu_threads=s.integer("LIPSYNC_CPU_THREADS", 0, 0, 256),
        )
