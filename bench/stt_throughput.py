"""STT throughput: audio seconds transcribed per wall second, one clip per model call vs batched.

    python bench/stt_throughput.py [--device cpu|cuda] [--compute-type int8] [--clips 16]
                                   [--batch-sizes 1,4,8] [--rounds 3] [--record]

Clips are English sentences synthesized by the bundled Piper voice (1.5-4 s each), so nothing is
downloaded. Each batch size runs over the same clips through the worker's WhisperTranscriber, the code
the STT worker runs; batch size 1 is the sequential baseline.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

from benchlib import record, table

SENTENCES = [
    "The weather is nice today.", "Please call me back tomorrow morning.",
    "The train leaves at seven o'clock.", "She bought three apples and a loaf of bread.",
    "Turn left at the next corner.", "We need more time to finish the project.",
    "The meeting was moved to Thursday afternoon.", "Can you send me the report by email?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--compute-type", default=None, help="default: int8 on cpu, float16 on cuda")
    parser.add_argument("--model", default="", help="STT_MODEL (default: bundled tiny.en)")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="write the table into docs/performance.md")
    args = parser.parse_args()

    import io

    from faster_whisper import decode_audio

    from workers.core.env import Settings
    from workers.stt.config import SttConfig
    from workers.stt.whisper import WhisperTranscriber
    from workers.tts.piper_backend import PiperBackend

    voice = PiperBackend(None, "cpu")
    voice.load()
    clips = []
    for i in range(args.clips):
        synthesis = voice.synthesize(SENTENCES[i % len(SENTENCES)], "default")
        # Decoded and resampled to 16 kHz as the worker does with an upload.
        clips.append(decode_audio(io.BytesIO(synthesis.wav_bytes()), sampling_rate=16000))
    audio_s = sum(len(c) for c in clips) / 16000

    sizes = [int(s) for s in args.batch_sizes.split(",")]
    env = {"STT_DEVICE": args.device, "STT_MODEL": args.model}
    if args.compute_type:
        env["STT_COMPUTE_TYPE"] = args.compute_type
    base = SttConfig.from_settings(Settings(env))
    transcriber = WhisperTranscriber(base)
    transcriber.load()
    transcriber.transcribe(clips[:1], [None])  # warm-up
    walls: dict[int, list[float]] = {size: [] for size in sizes}
    # Modes are interleaved round by round so background load on a shared machine hits them alike.
    for _ in range(args.rounds):
        for size in sizes:
            transcriber.config = replace(base, batch_size=size)
            start = time.perf_counter()
            for begin in range(0, len(clips), size):  # as the worker: one model call per batch of jobs
                batch = clips[begin:begin + size]
                transcriber.transcribe(batch, [None] * len(batch))
            walls[size].append(time.perf_counter() - start)
    rows = []
    for size in sizes:
        wall = statistics.median(walls[size])
        label = "sequential" if size == 1 else f"batched x{size}"
        rows.append([label, args.device, base.compute_type, len(clips), round(audio_s, 1), args.rounds,
                     round(wall, 2), round(audio_s / wall, 2), round(audio_s / min(walls[size]), 2)])
    out = table(["mode", "device", "compute", "clips", "audio s", "rounds", "median wall s",
                 "audio s / wall s (median)", "(best round)"], rows)
    print(out)
    if args.record:
        command = (f"python bench/stt_throughput.py --device {args.device} --clips {args.clips} "
                   f"--batch-sizes {args.batch_sizes} --rounds {args.rounds}")
        record(f"stt-{args.device}", command, out)


if __name__ == "__main__":
    main()
