"""Speech clips for the STT users: synthesized once, cached outside the repository, reused by every run.

The project's own TTS code (the bundled piper voice) speaks each phrase; where piper cannot load, espeak-ng
does. The cache key is the voice and the phrases, so changing a scenario's phrases makes new clips.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def default_cache_dir() -> Path:
    base = os.environ.get("HARNESS_CACHE") or str(Path.home() / ".cache/gpu-serving-harness")
    return Path(base) / "loadtests" / "audio"


def _piper_wavs(phrases: tuple[str, ...]) -> list[bytes]:
    from workers.tts.piper_backend import PiperBackend

    backend = PiperBackend(None, "cpu")
    backend.load()
    return [backend.synthesize(text, "default").wav_bytes() for text in phrases]


def _espeak_wavs(phrases: tuple[str, ...]) -> list[bytes]:
    espeak = shutil.which("espeak-ng") or shutil.which("espeak")
    if espeak is None:
        raise RuntimeError("cannot make STT audio: piper did not load and neither espeak-ng nor espeak is on PATH")
    out = []
    with tempfile.TemporaryDirectory(prefix="loadtest-espeak-") as tmp:
        for i, text in enumerate(phrases):
            target = Path(tmp) / f"{i}.wav"
            subprocess.run([espeak, "-w", str(target), text], check=True, capture_output=True)  # noqa: S603
            out.append(target.read_bytes())
    return out


def ensure_clips(phrases: tuple[str, ...], cache_dir: Path | None = None) -> list[Path]:
    """WAV files, one per phrase, made on the first call and read from the cache afterwards."""
    key = hashlib.sha256("\n".join(("piper-joe-or-espeak", *phrases)).encode()).hexdigest()[:16]
    folder = (cache_dir or default_cache_dir()) / key
    paths = [folder / f"clip-{i:02d}.wav" for i in range(len(phrases))]
    if all(p.is_file() and p.stat().st_size > 44 for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    try:
        wavs = _piper_wavs(phrases)
        maker = "piper"
    except (ImportError, OSError, RuntimeError) as exc:
        print(f"loadtests: piper unavailable ({exc}); using espeak-ng for the STT clips")
        wavs = _espeak_wavs(phrases)
        maker = "espeak"
    for path, data in zip(paths, wavs, strict=True):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    (folder / "SOURCE").write_text(f"made by {maker} from:\n" + "\n".join(phrases) + "\n")
    return paths
