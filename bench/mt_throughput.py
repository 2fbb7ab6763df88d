"""MT throughput: segments and target tokens per wall second, one job per model call vs jobs batched.

    python bench/mt_throughput.py [--device cpu|cuda] [--compute-type int8] [--jobs 32]
                                  [--segments-per-job 4] [--batch-sizes 1,4,8,16] [--rounds 3]
                                  [--d-model 512 --layers 6] [--out-tokens 32] [--model DIR] [--record]

The model is a Marian the size of the opus-mt models (d_model 512, 6+6 layers, 8 heads, feed-forward 2048,
a 58k vocabulary) built with random
weights by workers/mt/random_model.py and converted by CTranslate2's converter, unless --model names a real
converted one. Random weights never emit </s>, so every segment decodes exactly --out-tokens tokens
(MT_MAX_DECODING_LENGTH): the work per segment is fixed, which a trained model's would not be. Jobs are the
worker's own (MtEngine.prepare/run_batch on the same texts); batch size 1 is the sequential baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from benchlib import record, table

TEXTS = [
    "The weather is nice today.", "Please call me back tomorrow morning.",
    "The train leaves at seven o'clock.", "She bought three apples and a loaf of bread.",
    "Turn left at the next corner.", "We need more time to finish the project.",
    "The meeting was moved to Thursday afternoon.", "Can you send me the report by email?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--compute-type", default=None, help="default: int8 on cpu, float16 on cuda")
    parser.add_argument("--model", default="", help="a converted Marian model (MT_MODEL); default: random, built")
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--segments-per-job", type=int, default=4)
    parser.add_argument("--batch-sizes", default="1,4,8,16")
    parser.add_argument("--out-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="write the table into docs/performance.md")
    args = parser.parse_args()

    from workers.core.env import Settings
    from workers.mt.config import MtConfig
    from workers.mt.random_model import build_random_marian, convert
    from workers.mt.service import MtEngine

    tmp = tempfile.TemporaryDirectory()
    model = Path(args.model) if args.model else None
    if model is None:
        t0 = time.perf_counter()
        # opus-mt's shape: 8 heads, a 4x feed-forward, a 58k vocabulary.
        hf = build_random_marian(Path(tmp.name) / "hf", d_model=args.d_model, layers=args.layers,
                                 heads=max(1, args.d_model // 64), ffn_dim=4 * args.d_model, vocab_size=58_101)
        model = convert(hf, Path(tmp.name) / "ct2")
        print(f"built a random Marian d_model={args.d_model} layers={args.layers} in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    env = {"MT_MODEL": str(model), "MT_DEVICE": args.device, "MT_MAX_DECODING_LENGTH": str(args.out_tokens)}
    if args.compute_type:
        env["MT_COMPUTE_TYPE"] = args.compute_type
    config = MtConfig.from_settings(Settings(env))
    engine = MtEngine(config)
    t0 = time.perf_counter()
    engine.load()
    print(f"loaded in {time.perf_counter() - t0:.2f} s", flush=True)
    jobs = [SimpleNamespace(id=f"j{i}", data={"target_language": config.target_languages[0], "segments": [
        TEXTS[(i + k) % len(TEXTS)] for k in range(args.segments_per_job)]}) for i in range(args.jobs)]
    items = [asyncio.run(engine.prepare(j)) for j in jobs]
    segments = args.jobs * args.segments_per_job
    engine.run_batch(items[:1])  # warm-up
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    walls: dict[int, list[float]] = {s: [] for s in sizes}
    tokens: dict[int, int] = {}
    # Modes interleaved round by round, so background load on a shared machine hits them alike.
    for _ in range(args.rounds):
        for size in sizes:
            start = time.perf_counter()
            out = 0
            for begin in range(0, len(items), size):  # as the worker: one model call per batch of jobs
                out += sum(t.tokens_out for t in engine.run_batch(items[begin:begin + size]))
            walls[size].append(time.perf_counter() - start)
            tokens[size] = out
    rows = []
    for size in sizes:
        wall = statistics.median(walls[size])
        label = "one job per call" if size == 1 else f"batched x{size} jobs"
        rows.append([label, args.device, config.compute_type, args.jobs, segments, args.rounds, round(wall, 2),
                     round(segments / wall, 1), round(tokens[size] / wall), round(segments / min(walls[size]), 1)])
    out = table(["mode", "device", "compute", "jobs", "segments", "rounds", "median wall s",
                 "segments / s (median)", "target tokens / s", "segments / s (best round)"], rows)
    print(out)
    if args.record:
        command = (f"python bench/mt_throughput.py --device {args.device} --jobs {args.jobs} --segments-per-job "
                   f"{args.segments_per_job} --batch-sizes {args.batch_sizes} --out-tokens {args.out_tokens} "
                   f"--d-model {args.d_model} --layers {args.layers} --rounds {args.rounds}")
        record(f"mt-{args.device}", command, out)
    tmp.cleanup()


if __name__ == "__main__":
    main()
