"""Lay the synthesized segments on the timeline of the source: each starts at its source segment's start, or
where the previous one ended if that is later (a translation can be longer than the original), and the result
is at least as long as the source."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf


def mix(clips: list[bytes], starts: list[float], min_seconds: float) -> tuple[bytes, float, list[float]]:
    """WAV bytes of every clip placed on one track; its duration; where each clip was placed (s)."""
    if len(clips) != len(starts):
        raise ValueError(f"{len(clips)} clips for {len(starts)} segments")
    decoded = [sf.read(io.BytesIO(c), dtype="float32", always_2d=True) for c in clips]
    rates = {r for _, r in decoded}
    if len(rates) > 1:
        raise ValueError(f"the synthesized segments have different sample rates {sorted(rates)}")
    rate = rates.pop() if rates else 22050
    placed, cursor = [], 0
    for (audio, _), start in zip(decoded, starts, strict=True):
        at = max(round(start * rate), cursor)
        placed.append(at)
        cursor = at + audio.shape[0]
    total = max(cursor, round(min_seconds * rate))
    track = np.zeros(total, np.float32)
    for (audio, _), at in zip(decoded, placed, strict=True):
        track[at:at + audio.shape[0]] += audio.mean(axis=1)
    np.clip(track, -1.0, 1.0, out=track)
    out = io.BytesIO()
    sf.write(out, track, rate, format="WAV", subtype="PCM_16")
    return out.getvalue(), total / rate, [round(p / rate, 3) for p in placed]
