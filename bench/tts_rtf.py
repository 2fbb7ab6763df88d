"""TTS real-time factor (synthesis seconds / audio seconds; below 1 is faster than real time).

    python bench/tts_rtf.py [--device cpu|cuda] [--repeats 3] [--record]

Backends: piper with the bundled en_US joe voice, and coqui with a small VITS built from its config with
random weights (tests/workers/coqui_model.py). Random weights make the coqui audio noise, but the network
does the same work per output second, so the RTF is indicative of a VITS of this size, not of a trained
full-size model. Both run through the worker's backend classes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPO, record, table

TEXTS = [
    "The weather is nice today.",
    "Please call me back tomorrow morning, after the meeting with the design team.",
    "She bought three apples and a loaf of bread, then walked home along the river in the rain.",
]


def measure(backend, repeats: int) -> tuple[float, float]:
    backend.synthesize(TEXTS[0], "default")  # warm-up
    synth_s = audio_s = 0.0
    for _ in range(repeats):
        for text in TEXTS:
            start = time.perf_counter()
            result = backend.synthesize(text, "default")
            synth_s += time.perf_counter() - start
            audio_s += result.duration_s
    return synth_s, audio_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="piper,coqui")
    parser.add_argument("--record", action="store_true", help="write the table into docs/performance.md")
    args = parser.parse_args()

    from workers.core.env import Settings
    from workers.tts.config import TtsConfig
    from workers.tts.factory import make_backend

    sys.path.insert(0, str(REPO / "tests" / "workers"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backends.split(","):
            env = {"TTS_BACKEND": name, "TTS_DEVICE": args.device}
            label = "piper en_US-joe-medium"
            if name == "coqui":
                from coqui_model import build_random_vits

                env["TTS_MODEL_DIR"] = str(build_random_vits(Path(tmp) / "vits"))
                label = "coqui VITS (small, random weights)"
            backend = make_backend(TtsConfig.from_settings(Settings(env)))
            backend.load()
            synth_s, audio_s = measure(backend, args.repeats)
            rows.append([label, args.device, len(TEXTS) * args.repeats, round(audio_s, 1),
                         round(synth_s, 2), round(synth_s / audio_s, 3)])
    out = table(["backend", "device", "utterances", "audio s", "synthesis s", "RTF"], rows)
    print(out)
    if args.record:
        command = f"python bench/tts_rtf.py --device {args.device} --repeats {args.repeats}"
        record(f"tts-{args.device}", command, out)


if __name__ == "__main__":
    main()
