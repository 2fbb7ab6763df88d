"""Build a small XTTS with RANDOM weights in a model directory, the way a trained one ships (its speech is noise).

    python -m workers.xtts.random_model OUT_DIR [--seed 0]

Nothing is downloaded: the model is made from its config. Used by the tests, and by the local target's demo
(harness_demo_models), where no trained XTTS can be fetched: it exercises the real loading and inference code.
"""

from __future__ import annotations

from pathlib import Path

XTTS_SAMPLE_RATE = 24000  # XTTS's HiFi-GAN decoder writes 24 kHz (XttsAudioConfig.output_sample_rate)


def build_random_xtts(model_dir: Path, seed: int = 0) -> Path:
    """A small XTTS with random weights, saved as a trained XTTS ships: config.json ("model": "xtts"), model.pth
    ({"model": state dict, "config": ...}) and vocab.json (the BPE tokenizer; here the one coqui-tts ships for
    Tortoise, TTS/tts/utils/assets/tortoise/tokenizer.json). No speakers_xtts.pth (no built-in speakers) and no
    DVAE (inference does not use it; Xtts.load_checkpoint drops its keys); the mel statistics are the model's
    `mel_stats` buffer in the state dict.

    The GPT is tiny (2 layers, 64 channels) and may generate at most 8 audio codes (gpt_max_audio_tokens), so a
    sentence is about 0.2 s of audio. The HiFi-GAN decoder and its ResNet speaker encoder have fixed sizes in
    coqui-tts (XttsArgs sets only their input widths), so they are full size: model.pth is about 90 MB. RANDOM
    WEIGHTS: the audio is noise. RANDOM_WEIGHTS.txt marks the directory (the worker names it '<dir> (random
    weights)')."""
    import shutil

    import torch
    import TTS
    from TTS.tts.configs.xtts_config import XttsArgs, XttsAudioConfig
    from TTS.tts.configs.xtts_config import XttsConfig as CoquiXttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    model_dir.mkdir(parents=True, exist_ok=True)
    vocab = model_dir / "vocab.json"
    shutil.copyfile(Path(TTS.__file__).parent / "tts/utils/assets/tortoise/tokenizer.json", vocab)
    torch.manual_seed(seed)
    args = XttsArgs(gpt_layers=2, gpt_n_model_channels=64, gpt_n_heads=2, gpt_max_audio_tokens=8,
                    gpt_use_perceiver_resampler=True, decoder_input_dim=64)
    config = CoquiXttsConfig(model_args=args, audio=XttsAudioConfig())
    model = Xtts(config)
    # Xtts sizes its text embedding from the tokenizer it has: give it the vocabulary, as load_checkpoint will.
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(vocab))
    model.init_models()
    torch.save({"model": model.state_dict(), "config": config.to_dict()}, model_dir / "model.pth")
    config.save_json(str(model_dir / "config.json"))
    (model_dir / "RANDOM_WEIGHTS.txt").write_text(
        "This XTTS model has random weights (workers/xtts/random_model.py): it speaks noise.\n")
    return model_dir


def main(argv: list[str] | None = None) -> int:
    import argparse
    import shutil

    parser = argparse.ArgumentParser(prog="python -m workers.xtts.random_model",
                                     description="Write an XTTS model with RANDOM weights (it speaks noise) to OUT: "
                                                 "config.json, model.pth, vocab.json, RANDOM_WEIGHTS.txt.")
    parser.add_argument("out", type=Path, help="the model directory to write (XTTS_MODEL_DIR)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    staging = args.out.with_name(args.out.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    build_random_xtts(staging, seed=args.seed)
    if args.out.exists():
        shutil.rmtree(args.out)
    staging.rename(args.out)  # whole or absent: a reader never sees half a model
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
