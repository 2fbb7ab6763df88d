"""Lip-sync throughput: output frames per wall second, split into model and MP4 encoding, per frame batch size.

    python bench/lipsync_throughput.py [--device cpu|cuda] [--seconds 4] [--width 640 --height 360]
                                       [--batch-frames 1,8,32] [--channels 32] [--rounds 2] [--record]

The model is the Wav2Lip-style generator of workers/lipsync/model.py (96-px faces) with RANDOM weights (it does
not lip-sync; the work per frame is the same as a trained one of that shape). The video is a generated 25 fps
clip of --width x --height, the audio a synthetic tone of --seconds; both go through the worker's own decode,
render and encode code. Real time is 25 frames per wall second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from benchlib import REPO, record, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--batch-frames", default="1,8,32")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--record", action="store_true", help="write the table into docs/performance.md")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "tests" / "workers"))
    from media_samples import mux  # the test media generator, independent of the code measured

    from workers.core.env import Settings
    from workers.lipsync import media
    from workers.lipsync.config import LipsyncConfig
    from workers.lipsync.model import build_random
    from workers.lipsync.render import LipSyncer

    tmp = tempfile.TemporaryDirectory()
    model = build_random(Path(tmp.name) / "model", channels=args.channels)
    base = LipsyncConfig.from_settings(Settings({"LIPSYNC_MODEL": str(model), "LIPSYNC_DEVICE": args.device}))
    syncer = LipSyncer(base)
    syncer.load()
    video = media.decode_video(mux(50, args.width, args.height), 600)
    t = np.arange(int(16000 * args.seconds)) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    n = round(args.seconds * video.fps)
    syncer.render(video, audio[:16000], base.face_box)  # warm-up
    sizes = [int(s) for s in args.batch_frames.split(",")]
    walls: dict[int, list[tuple[float, float]]] = {s: [] for s in sizes}
    for _ in range(args.rounds):  # interleaved, so background load hits every size alike
        for size in sizes:
            syncer.config = replace(base, batch_frames=size)
            t0 = time.perf_counter()
            frames = syncer.render(video, audio, base.face_box)
            t1 = time.perf_counter()
            media.encode_mp4(frames, video.fps, audio)
            walls[size].append((t1 - t0, time.perf_counter() - t1))
    rows = []
    for size in sizes:
        render_s = statistics.median(w[0] for w in walls[size])
        encode_s = statistics.median(w[1] for w in walls[size])
        rows.append([size, args.device, f"{args.width}x{args.height}", n, args.rounds, round(render_s, 2),
                     round(encode_s, 2), round(n / (render_s + encode_s), 1), round(n / render_s, 1)])
    out = table(["frames per model call", "device", "video", "frames", "rounds", "render s (median)",
                 "encode s (median)", "frames / s (render + encode)", "frames / s (render only)"], rows)
    print(out)
    if args.record:
        record(f"lipsync-{args.device}", f"python bench/lipsync_throughput.py --device {args.device} --seconds "
               f"{args.seconds:g} --width {args.width} --height {args.height} --batch-frames {args.batch_frames} "
               f"--channels {args.channels} --rounds {args.rounds}", out)
    tmp.cleanup()


if __name__ == "__main__":
    main()
